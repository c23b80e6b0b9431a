#!/bin/sh
# azd preprovision hook: let this machine through the data services' firewalls.
#
# The post-provision step connects to PostgreSQL from here, and the first-file walkthrough
# uploads to `raw` from here, so main.bicep allows one operator IP (clientIpAddress) through
# the storage, Key Vault and PostgreSQL firewalls. This records your current public IPv4 in
# the azd environment as CLIENT_IP_ADDRESS, once. To choose yourself:
#   azd env set CLIENT_IP_ADDRESS 203.0.113.7    # another address
#   azd env set CLIENT_IP_ADDRESS ""             # none: nothing outside Azure gets in
set -eu

if azd env get-values | grep -q '^CLIENT_IP_ADDRESS='; then
  echo "CLIENT_IP_ADDRESS is set (\"$(azd env get-value CLIENT_IP_ADDRESS)\"); leaving it."
  exit 0
fi

ip="$(curl -fsS --max-time 10 https://api.ipify.org 2>/dev/null || true)"
case "$ip" in
  "" | *[!0-9.]*)
    echo "Could not detect this machine's public IPv4; the post-provision step will need another way in." >&2
    echo "Set it with: azd env set CLIENT_IP_ADDRESS <your IPv4>   (or \"\" for none)" >&2
    ;;
  *)
    azd env set CLIENT_IP_ADDRESS "$ip"
    echo "CLIENT_IP_ADDRESS=$ip: this machine may reach storage, Key Vault and PostgreSQL (Entra ID still required)."
    ;;
esac
