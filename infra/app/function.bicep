// The Function App on the Flex Consumption plan: Python, a user-assigned identity for every
// connection (storage, PostgreSQL, Key Vault, Application Insights), no secrets in settings.
//
// The app settings below are exactly what function_app.py's bindings and shared/settings.py
// read (tests/test_infra.py checks both directions). Flex Consumption takes its runtime and
// scale from functionAppConfig: FUNCTIONS_WORKER_RUNTIME, WEBSITE_RUN_FROM_PACKAGE and the like
// are not app settings on this plan.

param name string
param planName string
param location string
param tags object

@description('azd finds the app to deploy by this tag (azure.yaml services key).')
param serviceName string

param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainer string
param applicationInsightsName string

@description('Subnet of the VNet integration; empty without the VNet.')
param subnetId string = ''

@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

param postgresHost string
param postgresDatabase string

@description('PostgreSQL role mapped to the identity (infra/scripts/postgres_roles.py creates it).')
param postgresUser string

@description('NCRONTAB of the nightly re-drive (the timer binding reads %REPROCESS_SCHEDULE%).')
param reprocessSchedule string

@description('PostgreSQL schema of the ledger.')
param ledgerSchema string

@description('Days after which the storage lifecycle deletes raw blobs (the nightly job reads it).')
param rawRetentionDays int

@description('Hours the nightly vacuum keeps files that lake commits removed: how far back a reader can time-travel.')
param lakeRetentionHours int = 168

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption is offered in some regions only; a batch pipeline whose queue triggers retry and whose nightly job re-drives missed files rides out a zonal outage. Add zoneRedundant: true where the region supports it.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid delivers BlobCreated events to the blob extension's webhook on the public endpoint; the webhook requires the blobs_extension system key, and the app has no other HTTP function.
  // checkov:skip=CKV_AZURE_17: Event Grid cannot present a client certificate to the webhook.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by design; always-ready instances would bill around the clock for a batch pipeline.
  // checkov:skip=CKV_AZURE_213: no HTTP API to probe: the app is driven by Event Grid, queues and a timer, and the platform restarts failed hosts.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: empty(subnetId) ? null : subnetId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        // The Functions host's own storage (timer schedule monitor, blob receipts, keys).
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: storage.properties.primaryEndpoints.blob
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        // `DataStorage`: the connection of every binding (raw, curated, quarantine, queues).
        {
          name: 'DataStorage__blobServiceUri'
          value: storage.properties.primaryEndpoints.blob
        }
        {
          name: 'DataStorage__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: 'DataStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'DataStorage__clientId'
          value: identityClientId
        }
        // Telemetry, ingested with the identity (local auth is off on the component).
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'Authorization=AAD;ClientId=${identityClientId}'
        }
        // PostgreSQL with a Microsoft Entra token fetched for each new connection.
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'POSTGRES_HOST'
          value: postgresHost
        }
        {
          name: 'POSTGRES_DATABASE'
          value: postgresDatabase
        }
        {
          name: 'POSTGRES_USER'
          value: postgresUser
        }
        {
          name: 'PIPELINE_LEDGER_SCHEMA'
          value: ledgerSchema
        }
        {
          name: 'REPROCESS_SCHEDULE'
          value: reprocessSchedule
        }
        {
          name: 'RAW_RETENTION_DAYS'
          value: string(rawRetentionDays)
        }
        {
          name: 'LAKE_RETENTION_HOURS'
          value: string(lakeRetentionHours)
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
