// Private endpoints and their private DNS zones, one pair per service the app talks to
// (blob, queue, Key Vault, PostgreSQL), linked to the VNet so that the services' public names
// resolve to private addresses from inside it.
//
// Azure Verified Modules: these resources have no checkov checks, so nothing is lost by not
// seeing inside the modules (the versions are the ones the Flex Consumption samples use).

param location string
param tags object

@description('Virtual network that the DNS zones are linked to.')
param vnetId string

@description('Subnet of the private endpoints.')
param subnetId string

@description('One object per endpoint: name, serviceId (the target resource), groupId (its sub-resource), zone (private DNS zone name).')
param endpoints array

module zones 'br/public:avm/res/network/private-dns-zone:0.7.1' = [
  for endpoint in endpoints: {
    name: 'dns-${endpoint.groupId}'
    params: {
      name: endpoint.zone
      location: 'global'
      tags: tags
      virtualNetworkLinks: [
        {
          name: 'link-${endpoint.groupId}'
          virtualNetworkResourceId: vnetId
          registrationEnabled: false
          location: 'global'
          tags: tags
        }
      ]
    }
  }
]

module privateEndpoints 'br/public:avm/res/network/private-endpoint:0.11.0' = [
  for (endpoint, i) in endpoints: {
    name: 'pe-${endpoint.groupId}'
    params: {
      name: endpoint.name
      location: location
      tags: tags
      subnetResourceId: subnetId
      privateLinkServiceConnections: [
        {
          name: endpoint.name
          properties: {
            privateLinkServiceId: endpoint.serviceId
            groupIds: [
              endpoint.groupId
            ]
          }
        }
      ]
      privateDnsZoneGroup: {
        name: 'default'
        privateDnsZoneGroupConfigs: [
          {
            name: endpoint.groupId
            privateDnsZoneResourceId: zones[i].outputs.resourceId
          }
        ]
      }
    }
  }
]
