// Azure Database for PostgreSQL Flexible Server with Microsoft Entra authentication only:
// no password exists anywhere. The deployer is the Entra administrator; the post-provision hook
// (infra/scripts/postgres_roles.py) uses that to map the Function App's identity to a role.
//
// Plain resources rather than the AVM module: the order of the child resources matters (the
// server accepts one change at a time) and the auth settings are what tests and reviews read.

param name string
param location string
param tags object

@description('Compute SKU, e.g. Standard_B1ms (Burstable), Standard_D2ds_v5 (GeneralPurpose).')
param skuName string

@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param skuTier string

@description('Provisioned storage in GiB.')
param storageSizeGB int

@description('PostgreSQL major version.')
param version string = '16'

@description('The database the pipeline writes to (ledger schema and the contracts\' schemas).')
param databaseName string

@description('Object id of the Entra administrator (the deployer: a user, or a CI service principal).')
param administratorObjectId string

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param administratorType string

@description('PostgreSQL role name of the Entra administrator: what you pass as `user` when you connect.')
param administratorName string

@description('With the VNet, the app reaches the server through a private endpoint and public access is off (unless clientIpAddress).')
param vnetEnabled bool

@description('An operator\'s public IP allowed through the firewall (post-provision role mapping, queries); empty for none.')
param clientIpAddress string = ''

var publicAccess = (vnetEnabled && empty(clientIpAddress)) ? 'Disabled' : 'Enabled'

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuTier
  }
  properties: {
    version: version
    storage: {
      storageSizeGB: storageSizeGB
    }
    backup: {
      backupRetentionDays: 7
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: {
      mode: 'Disabled'
    }
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: subscription().tenantId
    }
    network: {
      publicNetworkAccess: publicAccess
    }
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: databaseName
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
}

// Without the VNet the Function App has no fixed outbound address: the 0.0.0.0 rule admits
// Azure services (Entra authentication still decides who gets in).
resource allowAzure 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (!vnetEnabled) {
  parent: server
  name: 'allow-azure-services'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
  dependsOn: [
    database
  ]
}

resource allowClient 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (!empty(clientIpAddress)) {
  parent: server
  name: 'allow-client-ip'
  properties: {
    startIpAddress: clientIpAddress
    endIpAddress: clientIpAddress
  }
  dependsOn: [
    allowAzure
  ]
}

// Last: the server refuses concurrent changes, so the administrator waits for the others.
resource administrator 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = {
  parent: server
  name: administratorObjectId
  properties: {
    principalName: administratorName
    principalType: administratorType
    tenantId: subscription().tenantId
  }
  dependsOn: [
    database
    allowAzure
    allowClient
  ]
}

output id string = server.id
output name string = server.name
output host string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
output administratorName string = administrator.properties.principalName
