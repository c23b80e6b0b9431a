// Key Vault in RBAC mode for the secrets that must still exist. None does by default: storage
// and PostgreSQL use Entra ID. When one is needed (say, POSTGRES_DSN_SECRET_URI naming a DSN of
// an external database), the Function App reads it with its identity (Key Vault Secrets User).

param name string
param location string
param tags object

@description('With the VNet, the app reaches the vault through a private endpoint and public access is off (unless clientIpAddress).')
param vnetEnabled bool

@description('An operator\'s public IP allowed through the firewall (to add secrets); empty for none.')
param clientIpAddress string = ''

@description('Purge protection keeps a deleted vault (and its name) for the retention period whatever happens: turn it on for production.')
param purgeProtection bool = false

var ipRules = empty(clientIpAddress) ? [] : [
  {
    value: clientIpAddress
  }
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_110: purge protection is a parameter (purgeProtection), off by default because it makes `azd down --purge` fail and blocks re-creating the environment under the same name for the retention period; the vault holds no secret by default. Turn it on for production.
  // checkov:skip=CKV_AZURE_42: "recoverable" means soft delete (on, 7 days) plus purge protection, which is the purgeProtection parameter, off by default for the reason above.
  // checkov:skip=CKV_AZURE_109: networkAcls default to Deny when vnetEnabled (the default); Allow only in the no-VNet mode, where the Function App has no fixed outbound address. Access needs Entra ID and an RBAC role.
  // checkov:skip=CKV_AZURE_189: public network access is Disabled when vnetEnabled (the default) unless an operator IP is allowed; the no-VNet mode needs the public endpoint.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enablePurgeProtection: purgeProtection ? true : null
    publicNetworkAccess: (vnetEnabled && empty(clientIpAddress)) ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
      ipRules: ipRules
      virtualNetworkRules: []
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
