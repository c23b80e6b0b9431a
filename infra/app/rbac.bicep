// Every role assignment in one place, each at the narrowest scope that works.
//
// The Function App's identity:
//   storage account   Storage Blob Data Owner         blob trigger, host storage, deployment package
//                     Storage Queue Data Contributor  blob trigger (its poison queue), host, queue bindings
//   each queue        Storage Queue Data Message Sender / Processor: the queue bindings' own roles,
//                     explicit so that the Contributor role above can go the day the blob trigger's
//                     connection (which documents Blob Data Owner + Queue Data Contributor) moves
//                     to another account
//   Key Vault         Key Vault Secrets User          read a secret a setting names
//   App Insights      Monitoring Metrics Publisher    Entra-authenticated telemetry
// The Event Grid system topic's identity:
//   dead-letter container  Storage Blob Data Contributor  write undeliverable events
// The deployer (optional, for the first-file walkthrough and for adding secrets):
//   storage account   Storage Blob Data Contributor   upload to raw, read curated and quarantine
//   Key Vault         Key Vault Secrets Officer        manage secrets

param storageAccountName string
param queues array
param deadLetterContainer string
param keyVaultName string
param applicationInsightsName string

@description('Principal (object) id of the Function App\'s user-assigned identity.')
param appPrincipalId string

@description('Principal id of the Event Grid system topic\'s identity.')
param eventGridPrincipalId string

@description('Object id of the deployer; empty to skip the deployer\'s roles.')
param deployerPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param deployerPrincipalType string = 'User'

// Built-in role definition ids (the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  storageQueueDataMessageProcessor: '8a0f0c08-91a1-4084-bc3d-661d67233fed'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetter 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainer
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource queueRefs 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [
  for queue in queues: {
    parent: queueService
    name: queue
  }
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// --- the Function App's identity -------------------------------------------------------------

resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for i in range(0, length(queues)): {
    name: guid(queueRefs[i].id, appPrincipalId, roles.storageQueueDataMessageSender)
    scope: queueRefs[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
      principalId: appPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource appQueueProcessor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for i in range(0, length(queues)): {
    name: guid(queueRefs[i].id, appPrincipalId, roles.storageQueueDataMessageProcessor)
    scope: queueRefs[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageProcessor)
      principalId: appPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- the Event Grid system topic's identity ----------------------------------------------------

resource eventGridDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetter.id, eventGridPrincipalId, roles.storageBlobDataContributor)
  scope: deadLetter
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: eventGridPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- the deployer --------------------------------------------------------------------------------

resource deployerBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(storage.id, deployerPrincipalId, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}

resource deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}
