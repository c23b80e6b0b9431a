// The virtual network behind `vnetEnabled`: one subnet for the Function App's outbound VNet
// integration, one for the private endpoints of storage, Key Vault and PostgreSQL, each with
// its network security group.
//
// Plain resources rather than the AVM virtual-network module: checkov cannot see inside
// registry modules, and the NSG rules are exactly what a security review wants to read.

@description('Name of the virtual network.')
param name string

param location string
param tags object

// Fixed, private address ranges. (Plain strings: cidrSubnet() would read better, but the
// pinned Bicep parser that checkov uses does not know that function yet.)
@description('Address space of the virtual network.')
param addressPrefix string = '10.40.0.0/16'

@description('Subnet of the Function App\'s VNet integration (delegated to Microsoft.App/environments).')
param appSubnetPrefix string = '10.40.1.0/24'

@description('Subnet of the private endpoints.')
param privateEndpointSubnetPrefix string = '10.40.2.0/24'

// The integration subnet only carries the app's outbound traffic: nothing may come in, which
// the default rules already say (DenyAllInBound after VNet and load balancer).
resource appNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-app-${name}'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

// Private endpoints answer the app subnet only, and only on the ports the app uses:
// 443 for blob, queue and Key Vault, 5432 for PostgreSQL.
resource privateEndpointNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-pe-${name}'
  location: location
  tags: tags
  properties: {
    securityRules: [
      {
        name: 'allow-app-subnet-to-endpoints'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: appSubnetPrefix
          sourcePortRange: '*'
          destinationAddressPrefix: privateEndpointSubnetPrefix
          destinationPortRanges: [
            '443'
            '5432'
          ]
        }
      }
      {
        name: 'deny-other-vnet-inbound'
        properties: {
          priority: 4000
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: 'VirtualNetwork'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: appNsg.id
          }
          // Flex Consumption integrates through a subnet delegated to Container Apps environments.
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: privateEndpointNsg.id
          }
          // Enabled, so that the NSG above applies to the private endpoints too.
          privateEndpointNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

output vnetId string = vnet.id
output appSubnetId string = '${vnet.id}/subnets/app'
output privateEndpointSubnetId string = '${vnet.id}/subnets/private-endpoints'
