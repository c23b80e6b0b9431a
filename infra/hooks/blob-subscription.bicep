// The BlobCreated subscription that fires `ingest`: Event Grid posts each new `raw/*.csv[.gz]`
// to the blob extension's webhook. It cannot live in main.bicep because the webhook's key
// (the host's `blobs_extension` system key) exists only once the code is deployed and the host
// has started, so infra/hooks/postdeploy.sh deploys this file after every `azd deploy`, as the
// official Flex Consumption + Event Grid samples do (they use the CLI; a template keeps the
// filter, retry and dead-letter settings reviewable and checked by tests/test_infra.py).

targetScope = 'resourceGroup'

@description('The storage account\'s Event Grid system topic (main.bicep output EVENTGRID_SYSTEM_TOPIC_NAME).')
param systemTopicName string

@description('The Function App (output AZURE_FUNCTION_APP_NAME).')
param functionAppName string

@description('The storage account holding raw and the dead-letter container.')
param storageAccountName string

@secure()
@description('The host\'s blobs_extension system key: `az functionapp keys list ... --query systemKeys.blobs_extension`.')
param blobsExtensionKey string

@description('The blob-triggered function (function_app.py: @app.function_name("ingest")).')
param functionName string = 'ingest'

@description('The container the blob trigger watches (its path is raw/{name}).')
param rawContainer string = 'raw'

@description('The file names the pipeline accepts (shared/layout.py ACCEPTED_SUFFIXES).')
param acceptedSuffixes array = [
  '.csv'
  '.csv.gz'
]

@description('Container for the events that could not be delivered.')
param deadLetterContainer string = 'eventgrid-deadletter'

@description('Deliveries of one event before it is dead-lettered (Event Grid backs off exponentially).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes an event is retried before it is dead-lettered (24 h: a long outage of the app still recovers).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource subscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'raw-blob-created'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${site.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${rawContainer}/blobs/'
      isSubjectCaseSensitive: false
      // StringEndsWith is case-insensitive, as shared/layout.accepted() is.
      advancedFilters: [
        {
          operatorType: 'StringEndsWith'
          key: 'subject'
          values: acceptedSuffixes
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    // Written with the topic's own identity (Storage Blob Data Contributor on this container,
    // infra/app/rbac.bicep): the account accepts no keys.
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainer
        }
      }
    }
  }
}

output subscriptionName string = subscription.name
