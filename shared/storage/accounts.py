"""Service clients for a storage account, from a connection setting as the Functions host reads it.

A connection named ``DataStorage`` is either a connection string (``DataStorage=...``, Azurite's
``UseDevelopmentStorage=true`` locally) or the identity-based family Azure uses:
``DataStorage__blobServiceUri``, ``__queueServiceUri``, ``__credential=managedidentity`` and
``__clientId``. Bindings and this code read the same settings, so what a trigger can reach,
the code it calls can reach too. The settings are read from the environment here, at the edge,
because they are the host's convention for connections, not the pipeline's own settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["DATA_CONNECTION", "blob_service", "queue_service"]

DATA_CONNECTION = "DataStorage"
"""The connection setting (prefix) of the data account: ``raw``, ``curated``, ``quarantine``
and the queues."""


def _setting(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name) or None


def _credential(connection: str, env: Mapping[str, str]) -> Any:
    """The identity of an identity-based connection, as the Functions host resolves it."""
    kind = _setting(env, f"{connection}__credential")
    client_id = _setting(env, f"{connection}__clientId")
    if kind == "managedidentity":
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id) if client_id else DefaultAzureCredential()


def _service_uri(connection: str, service: str, env: Mapping[str, str]) -> str | None:
    return _setting(env, f"{connection}__{service}ServiceUri") or (
        _setting(env, f"{connection}__serviceUri") if service == "blob" else None
    )


def blob_service(connection: str = DATA_CONNECTION, env: Mapping[str, str] | None = None, **options: Any) -> Any:
    """The blob service of a connection; ``options`` go to the SDK client (a command line that
    must fail fast passes a short retry policy and connection timeout; the app keeps the SDK's)."""
    from azure.storage.blob import BlobServiceClient

    env = os.environ if env is None else env
    conn_str = _setting(env, connection)
    if conn_str:
        return BlobServiceClient.from_connection_string(conn_str, **options)
    uri = _service_uri(connection, "blob", env)
    if not uri:
        raise RuntimeError(f"app setting {connection} (or {connection}__blobServiceUri) is not set")
    return BlobServiceClient(account_url=uri, credential=_credential(connection, env), **options)


def queue_service(connection: str = DATA_CONNECTION, env: Mapping[str, str] | None = None, **options: Any) -> Any:
    """The queue service of a connection; ``options`` as for ``blob_service``."""
    from azure.storage.queue import QueueServiceClient

    env = os.environ if env is None else env
    conn_str = _setting(env, connection)
    if conn_str:
        return QueueServiceClient.from_connection_string(conn_str, **options)
    uri = _service_uri(connection, "queue", env)
    if not uri:
        raise RuntimeError(f"app setting {connection} (or {connection}__queueServiceUri) is not set")
    return QueueServiceClient(account_url=uri, credential=_credential(connection, env), **options)
