#!/bin/sh
# azd postdeploy hook: subscribe the blob trigger to BlobCreated events from `raw`.
#
# Flex Consumption runs blob triggers from Event Grid only. The subscription delivers to the
# blob extension's webhook, whose URL carries the host's `blobs_extension` system key; that key
# exists only once the code is deployed and the host has started, hence a post-deploy step
# (the official Flex Consumption + Event Grid samples do the same). It deploys
# infra/hooks/blob-subscription.bicep (filters, retries, dead letters) and is idempotent.
# Needs the Azure CLI, signed in (`az login`) to the same tenant and subscription as azd.
set -eu
cd "$(dirname "$0")/../.."

: "${AZURE_RESOURCE_GROUP:?run azd provision first}"
: "${AZURE_FUNCTION_APP_NAME:?run azd provision first}"
: "${AZURE_STORAGE_ACCOUNT_NAME:?run azd provision first}"
: "${EVENTGRID_SYSTEM_TOPIC_NAME:?run azd provision first}"
if [ -n "${AZURE_SUBSCRIPTION_ID:-}" ]; then
  az account set --subscription "$AZURE_SUBSCRIPTION_ID"
fi

echo "Waiting for the blobs_extension key of $AZURE_FUNCTION_APP_NAME (created when the host starts)"
key=""
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  key="$(az functionapp keys list --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
    --query systemKeys.blobs_extension --output tsv 2>/dev/null || true)"
  [ -n "$key" ] && break
  sleep 15
done
if [ -z "$key" ]; then
  echo "No blobs_extension key after 5 minutes: is the app running? Check its log stream, then run this hook again:" >&2
  echo "  azd hooks run postdeploy" >&2
  exit 1
fi

# The key goes in a parameters file readable only by us, never on a command line.
params="$(mktemp)"
trap 'rm -f "$params"' EXIT
chmod 600 "$params"
cat >"$params" <<JSON
{
  "\$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
  "contentVersion": "1.0.0.0",
  "parameters": {
    "systemTopicName": { "value": "$EVENTGRID_SYSTEM_TOPIC_NAME" },
    "functionAppName": { "value": "$AZURE_FUNCTION_APP_NAME" },
    "storageAccountName": { "value": "$AZURE_STORAGE_ACCOUNT_NAME" },
    "blobsExtensionKey": { "value": "$key" }
  }
}
JSON

# Event Grid validates the webhook while the subscription is created; a host that is still
# warming up can miss that, so try a few times.
echo "Creating the BlobCreated subscription (raw/*.csv, raw/*.csv.gz) on $EVENTGRID_SYSTEM_TOPIC_NAME"
for attempt in 1 2 3; do
  if az deployment group create --resource-group "$AZURE_RESOURCE_GROUP" --name blob-created-subscription \
    --template-file infra/hooks/blob-subscription.bicep --parameters "@$params" --only-show-errors --output none; then
    echo "BlobCreated events from raw now fire the ingest function."
    exit 0
  fi
  echo "Attempt $attempt failed; retrying in 30 s" >&2
  sleep 30
done
exit 1
