// The one storage account: the pipeline's data (raw, curated, quarantine and the queues), the
// Functions host's own state, the Flex Consumption deployment package and Event Grid's
// dead letters. No account keys: shared-key access is off, every client uses Entra ID.
//
// Plain resources rather than the AVM storage-account module, so that checkov sees (and the
// tests read) every property that makes the account safe.

param name string
param location string
param tags object

// The pipeline's containers (shared/layout.py names them; tests/test_infra.py checks they agree).
@description('Where producers drop CSV files; the blob trigger watches it.')
param rawContainer string

@description('Clean Parquet, aggregates, reports and manifests.')
param curatedContainer string

@description('Refused files, rejected rows and error reports.')
param quarantineContainer string

@description('Container of the Flex Consumption deployment package.')
param deploymentContainer string

@description('Container where Event Grid writes the events it could not deliver.')
param deadLetterContainer string

@description('The pipeline\'s queues, from shared/layout.py.')
param queues array

@description('Name of the Event Grid system topic of this account (the BlobCreated source).')
param systemTopicName string

@description('With the VNet, the account refuses public traffic except trusted Azure services and clientIpAddress.')
param vnetEnabled bool

@description('An operator\'s public IP allowed through the firewall (uploads from a laptop); empty for none.')
param clientIpAddress string = ''

@description('Raw blobs move to the cool tier after this many days without change.')
param rawCoolAfterDays int = 30

@description('Raw blobs are deleted after this many days without change.')
param rawRetentionDays int = 365

@description('Quarantined files, rejects and error reports are deleted after this many days.')
param quarantineRetentionDays int = 90

@description('Dead-lettered events are deleted after this many days.')
param deadLetterRetentionDays int = 30

var ipRules = empty(clientIpAddress) ? [] : [
  {
    value: clientIpAddress
    action: 'Allow'
  }
]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_59: public endpoint kept on purpose but closed by networkAcls: with the VNet, default Deny lets in only trusted Azure services (Event Grid dead-lettering with its managed identity) and clientIpAddress; without it, Flex Consumption has no fixed outbound address to allow. Every request needs Entra ID (shared keys are off).
  // checkov:skip=CKV_AZURE_35: default action is Deny when vnetEnabled (the default); Allow only in the no-VNet mode, where the Function App has no fixed outbound address. Shared keys are off, so every request needs Entra ID and an RBAC role.
  // checkov:skip=CKV_AZURE_206: LRS is the cost-conscious default for a batch pipeline whose raw files can be re-sent by their producers; switch the SKU to Standard_ZRS or Standard_GZRS for production durability.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
      ipRules: ipRules
      virtualNetworkRules: []
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // A blob or container deleted by mistake can be restored for a week.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for container in [rawContainer, curatedContainer, quarantineContainer, deploymentContainer, deadLetterContainer]: {
    parent: blobService
    name: container
    properties: {
      publicAccess: 'None'
    }
  }
]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

// The host creates the `<queue>-poison` queues itself when a message first fails too often.
resource queueResources 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queue in queues: {
    parent: queueService
    name: queue
  }
]

// Old raw files cool down and eventually go; quarantine and dead letters are kept for review,
// then go. Curated outputs are pruned by the pipeline itself (older runs of a source).
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'raw-cool-then-delete'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${rawContainer}/'
              ]
            }
            actions: {
              baseBlob: {
                tierToCool: {
                  daysAfterModificationGreaterThan: rawCoolAfterDays
                }
                delete: {
                  daysAfterModificationGreaterThan: rawRetentionDays
                }
              }
            }
          }
        }
        {
          name: 'quarantine-delete'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${quarantineContainer}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: quarantineRetentionDays
                }
              }
            }
          }
        }
        {
          name: 'dead-letter-delete'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${deadLetterContainer}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: deadLetterRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

// The source of BlobCreated events. Its subscription (to the blob extension's webhook) needs a
// key that exists only once the code runs, so infra/hooks/postdeploy.sh creates it.
// The topic's own identity writes dead letters (the account takes no keys).
resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: account.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output systemTopicName string = systemTopic.name
output systemTopicPrincipalId string = systemTopic.identity.principalId
