"""PostgreSQL connections: a DSN locally, a Key Vault secret or a Microsoft Entra token in Azure.

Three ways to connect, in this order of precedence:

1. ``POSTGRES_DSN``: a libpq connection string (local development, tests, CI);
2. ``POSTGRES_DSN_SECRET_URI``: a Key Vault secret holding the DSN, read with the managed
   identity through ``azure-keyvault-secrets``;
3. ``POSTGRES_HOST`` + ``POSTGRES_DATABASE`` + ``POSTGRES_USER``: Microsoft Entra
   authentication, the password being an access token fetched for each new connection.

Tokens expire (about an hour), so a connection kept for reuse has a bounded lifetime and is
replaced before its token could matter. A connection is never shared between threads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg

from shared.core.redaction import redact, register_secret

ENTRA_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
MAX_LIFETIME_SECONDS = 30 * 60
CONNECT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class ConnectionPlan:
    """How to open a connection; ``password`` is called for each new connection."""

    conninfo: str
    password: Callable[[], str] | None = None
    describe: str = ""


def _secret_dsn(uri: str, credential: Any = None, client_factory: Callable[..., Any] | None = None) -> str:
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    parts = [p for p in parsed.path.split("/") if p]
    if len(parts) < 2 or parts[0] != "secrets":
        raise ValueError("POSTGRES_DSN_SECRET_URI must look like https://<vault>.vault.azure.net/secrets/<name>[/<version>]")
    if client_factory is None:
        from azure.keyvault.secrets import SecretClient

        client_factory = SecretClient
    if credential is None:
        credential = _default_credential()
    client = client_factory(vault_url=f"{parsed.scheme}://{parsed.netloc}", credential=credential)
    secret = client.get_secret(parts[1], parts[2] if len(parts) > 2 else None)
    return str(secret.value)


def _reader(environ: Mapping[str, str] | None) -> Callable[..., str | None]:
    """``env(name, default)`` over ``environ`` (the process environment by default); empty is unset."""
    values = os.environ if environ is None else environ

    def env(name: str, default: str | None = None) -> str | None:
        return values.get(name) or default

    return env


def _default_credential(environ: Mapping[str, str] | None = None) -> Any:
    env = _reader(environ)
    return credential_for(env("AZURE_CLIENT_ID"))


@cache
def credential_for(client_id: str | None) -> Any:
    """One credential per identity and process: it caches its tokens, so a new connection
    costs a token request only when the cached token is close to expiry."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id) if client_id else DefaultAzureCredential()


def plan(
    credential: Any = None, secret_client_factory: Callable[..., Any] | None = None, environ: Mapping[str, str] | None = None
) -> ConnectionPlan:
    """Decide how to connect from the app settings (``environ``: the process environment by
    default; like the storage connections, these are read at the edge that uses them)."""
    env = _reader(environ)
    dsn = env("POSTGRES_DSN")
    if dsn:
        protect(dsn)
        return ConnectionPlan(dsn, describe=redact(dsn))
    secret_uri = env("POSTGRES_DSN_SECRET_URI")
    if secret_uri:
        dsn = _secret_dsn(secret_uri, credential or _default_credential(environ), secret_client_factory)
        protect(dsn)
        return ConnectionPlan(dsn, describe=f"Key Vault secret {secret_uri}: {redact(dsn)}")
    host = env("POSTGRES_HOST")
    if host:
        user = env("POSTGRES_USER")
        if not user:
            raise RuntimeError("POSTGRES_USER must name the role mapped to the managed identity")
        database = env("POSTGRES_DATABASE", "postgres")
        cred = credential or _default_credential(environ)
        conninfo = psycopg.conninfo.make_conninfo(host=host, dbname=database, user=user, sslmode="require")
        return ConnectionPlan(
            conninfo, password=lambda: cred.get_token(ENTRA_SCOPE).token, describe=f"{user}@{host}/{database} (Entra token)"
        )
    raise RuntimeError("no PostgreSQL configured: set POSTGRES_DSN, POSTGRES_DSN_SECRET_URI or POSTGRES_HOST")


def protect(dsn: str) -> None:
    """Register a DSN's password with the redaction of every log line and error: as libpq reads
    it and as its writer meant it (a URL's user information up to the last ``@``)."""
    import re

    try:
        password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        password = None
    if password:
        register_secret(str(password))
    meant = re.search(r"://[^:/@\s]+:([^\s/?#]*)@", dsn)
    if meant and meant.group(1):
        register_secret(meant.group(1))


def connect(
    p: ConnectionPlan | None = None, *, autocommit: bool = True, application_name: str = "csv-pipeline"
) -> psycopg.Connection:
    p = p or plan()
    kwargs: dict[str, Any] = {"autocommit": autocommit, "application_name": application_name}
    if "connect_timeout" not in p.conninfo:
        kwargs["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    if p.password is not None:
        kwargs["password"] = p.password()
    return psycopg.connect(p.conninfo, **kwargs)


class ConnectionCache:
    """One connection per thread, reused across invocations, replaced when it is broken, older
    than ``max_lifetime`` (so an Entra token never outlives its connection), or dead after a
    quiet spell: a connection idle for ``check_after`` seconds is pinged before it is handed
    out, so a server restart or a dropped idle connection costs a reconnect, not a failed
    delivery."""

    def __init__(
        self,
        factory: Callable[[], psycopg.Connection] | None = None,
        max_lifetime: float = MAX_LIFETIME_SECONDS,
        check_after: float = 5.0,
    ) -> None:
        self.factory = factory or connect
        self.max_lifetime = max_lifetime
        self.check_after = check_after
        self.local = threading.local()

    def get(self) -> psycopg.Connection:
        conn: psycopg.Connection | None = getattr(self.local, "conn", None)
        born: float = getattr(self.local, "born", 0.0)
        used: float = getattr(self.local, "used", 0.0)
        now = time.monotonic()
        if conn is not None and (
            conn.closed or conn.broken or now - born > self.max_lifetime or not self._alive(conn, now - used)
        ):
            try:
                conn.close()
            finally:
                conn = None
        if conn is None:
            conn = self.factory()
            self.local.conn, self.local.born = conn, time.monotonic()
        self.local.used = time.monotonic()
        return conn

    def _alive(self, conn: psycopg.Connection, idle: float) -> bool:
        if idle < self.check_after:
            return True
        try:
            conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def discard(self) -> None:
        conn = getattr(self.local, "conn", None)
        self.local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone anyway
                pass
