// The CSV pipeline on Azure: `azd up` provisions this, deploys the code, then the hooks map the
// Function App's identity to a PostgreSQL role (postprovision) and subscribe its blob trigger to
// BlobCreated events (postdeploy). See docs/deploy.md.
//
// Azure Verified Modules where nothing is lost by using them (identity, monitoring, private
// endpoints and DNS); plain resources in infra/app/ where checkov's checks or our tests need to
// see the properties (storage, Key Vault, PostgreSQL, the Function App, the network).

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; with the subscription and location it seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource; it must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@minLength(1)
@description('Object id of the deployer (azd sets AZURE_PRINCIPAL_ID): the PostgreSQL Entra administrator, and roles to upload files.')
param principalId string

@allowed([
  'User'
  'ServicePrincipal'
])
@description('User when a person runs azd up; ServicePrincipal when a pipeline provisions.')
param principalType string = 'User'

@description('Private networking: a VNet, VNet integration and private endpoints; data services refuse other public traffic.')
param vnetEnabled bool = true

@description('Your public IP, let through the storage, Key Vault and PostgreSQL firewalls (the preprovision hook fills it in); empty for none.')
param clientIpAddress string = ''

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance; CPU grows with it. 2048 fits 32 MB chunks with room.')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Most instances the app scales out to; each `load` instance holds a few PostgreSQL connections (docs/deploy.md, Sizing).')
param maximumInstanceCount int = 40

@allowed([
  '3.11'
  '3.12'
])
@description('Python of the Function App; requirements.txt pins azure-functions 1.2x, which needs 3.11 or 3.12.')
param pythonVersion string = '3.11'

@description('PostgreSQL compute SKU.')
param postgresSkuName string = 'Standard_B1ms'

@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param postgresSkuTier string = 'Burstable'

@allowed([
  32
  64
  128
  256
  512
  1024
])
@description('PostgreSQL storage in GiB.')
param postgresStorageSizeGB int = 32

@description('NCRONTAB of the nightly re-drive.')
param reprocessSchedule string = '0 0 2 * * *'

@description('Raw blobs are deleted after this many days; the nightly job counts older loaded blobs as aged out, not missing.')
param rawRetentionDays int = 365

@description('Key Vault purge protection: on for production (then `azd down --purge` cannot purge it).')
param keyVaultPurgeProtection bool = false

// --- names ---------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

// The azure.yaml service that azd deploys to the Function App (found by its azd-service-name tag).
var serviceName = 'pipeline'

// What the code names (shared/layout.py, function_app.py); tests/test_infra.py checks they agree.
var rawContainer = 'raw'
var curatedContainer = 'curated'
var quarantineContainer = 'quarantine'
var queues = [
  'load-requests'
  'ingest-requests'
]
var deploymentContainer = 'app-package'
var deadLetterContainer = 'eventgrid-deadletter'
var databaseName = 'pipeline'
var ledgerSchema = 'pipeline'

// The PostgreSQL role of the Entra administrator (the deployer) and of the app's identity.
var postgresAdminName = 'pipeline_admin'
var identityName = 'id-func-${resourceToken}'

var functionAppName = 'func-${resourceToken}'

// --- resources -----------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity'
  scope: rg
  params: {
    name: identityName
    location: location
    tags: tags
  }
}

module network 'app/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: 'vnet-${resourceToken}'
    location: location
    tags: tags
  }
}

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.11.1' = {
  name: 'log-analytics'
  scope: rg
  params: {
    name: 'log-${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
  }
}

// Local authentication off: telemetry is accepted only with an Entra token (the app's identity
// holds Monitoring Metrics Publisher).
module appInsights 'br/public:avm/res/insights/component:0.6.0' = {
  name: 'app-insights'
  scope: rg
  params: {
    name: 'appi-${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    disableLocalAuth: true
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    rawContainer: rawContainer
    curatedContainer: curatedContainer
    quarantineContainer: quarantineContainer
    deploymentContainer: deploymentContainer
    deadLetterContainer: deadLetterContainer
    queues: queues
    systemTopicName: 'evgt-${resourceToken}'
    vnetEnabled: vnetEnabled
    clientIpAddress: clientIpAddress
    rawRetentionDays: rawRetentionDays
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    vnetEnabled: vnetEnabled
    clientIpAddress: clientIpAddress
    purgeProtection: keyVaultPurgeProtection
  }
}

module database 'app/database.bicep' = {
  name: 'database'
  scope: rg
  params: {
    name: 'psql-${resourceToken}'
    location: location
    tags: tags
    skuName: postgresSkuName
    skuTier: postgresSkuTier
    storageSizeGB: postgresStorageSizeGB
    databaseName: databaseName
    administratorObjectId: principalId
    administratorType: principalType
    administratorName: postgresAdminName
    vnetEnabled: vnetEnabled
    clientIpAddress: clientIpAddress
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    queues: queues
    deadLetterContainer: deadLetterContainer
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: appInsights.outputs.name
    appPrincipalId: identity.outputs.principalId
    eventGridPrincipalId: storage.outputs.systemTopicPrincipalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

module privateEndpoints 'app/private-endpoints.bicep' = if (vnetEnabled) {
  name: 'private-endpoints'
  scope: rg
  params: {
    location: location
    tags: tags
    vnetId: vnetEnabled ? network.outputs.vnetId : ''
    subnetId: vnetEnabled ? network.outputs.privateEndpointSubnetId : ''
    endpoints: [
      {
        name: 'pe-blob-${resourceToken}'
        serviceId: storage.outputs.id
        groupId: 'blob'
        zone: 'privatelink.blob.${environment().suffixes.storage}'
      }
      {
        name: 'pe-queue-${resourceToken}'
        serviceId: storage.outputs.id
        groupId: 'queue'
        zone: 'privatelink.queue.${environment().suffixes.storage}'
      }
      {
        name: 'pe-vault-${resourceToken}'
        serviceId: keyVault.outputs.id
        groupId: 'vault'
        zone: 'privatelink.vaultcore.azure.net'
      }
      {
        name: 'pe-postgres-${resourceToken}'
        serviceId: database.outputs.id
        groupId: 'postgresqlServer'
        zone: 'privatelink.postgres.database.azure.com'
      }
    ]
  }
}

// The app starts as soon as it exists, so it waits for its roles and private endpoints.
module functionApp 'app/function.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    serviceName: serviceName
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainer: deploymentContainer
    applicationInsightsName: appInsights.outputs.name
    subnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    postgresHost: database.outputs.host
    postgresDatabase: database.outputs.databaseName
    postgresUser: identityName
    reprocessSchedule: reprocessSchedule
    rawRetentionDays: rawRetentionDays
    ledgerSchema: ledgerSchema
  }
  dependsOn: [
    rbac
    privateEndpoints
  ]
}

// --- outputs: azd stores them in .azure/<env>/.env; the hooks and docs/deploy.md use them ------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output VNET_ENABLED bool = vnetEnabled

output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_HOST string = functionApp.outputs.defaultHostName
output AZURE_FUNCTION_IDENTITY_NAME string = identityName
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId

output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output RAW_CONTAINER string = rawContainer
output CURATED_CONTAINER string = curatedContainer
output QUARANTINE_CONTAINER string = quarantineContainer
output EVENTGRID_SYSTEM_TOPIC_NAME string = storage.outputs.systemTopicName
output EVENTGRID_DEADLETTER_CONTAINER string = deadLetterContainer

output POSTGRES_SERVER_NAME string = database.outputs.name
output POSTGRES_HOST string = database.outputs.host
output POSTGRES_DATABASE string = database.outputs.databaseName
output POSTGRES_ADMIN_USER string = database.outputs.administratorName
output POSTGRES_USER string = identityName
output PIPELINE_LEDGER_SCHEMA string = ledgerSchema

output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output APPLICATIONINSIGHTS_NAME string = appInsights.outputs.name
