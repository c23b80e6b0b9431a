"""The Azure code paths of shared/postgres/connections.py, with stand-ins for Key Vault and Microsoft Entra ID.

Neither service runs here, so the stand-ins implement the real clients' call signatures:
``credential.get_token(*scopes)`` returns an object with ``.token`` and ``.expires_on`` (epoch
seconds), like ``azure.core.credentials.AccessToken``; ``SecretClient(vault_url=..., credential=...)``
has ``get_secret(name, version)`` returning an object with ``.value``, like ``KeyVaultSecret``.
Connections are real: a fresh database on the local PostgreSQL (``pg_dsn`` from conftest), whose
trust authentication ignores the password, so the token each connection was opened with can be
read back from ``conn.info.password``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from shared.postgres import connections

AZURE_SETTINGS = (
    "POSTGRES_DSN",
    "POSTGRES_DSN_SECRET_URI",
    "POSTGRES_HOST",
    "POSTGRES_DATABASE",
    "POSTGRES_USER",
    "AZURE_CLIENT_ID",
)


@dataclass(frozen=True)
class AccessToken:
    """What ``azure.core.credentials.AccessToken`` carries."""

    token: str
    expires_on: int


class Clock:
    """A hand-wound clock for both ``time.monotonic`` (the cache) and token expiry."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeCredential:
    """A ``TokenCredential``: a new token per call, valid for ``lifetime`` seconds."""

    clock: Clock = field(default_factory=Clock)
    lifetime: int = 3600
    calls: list[tuple[str, ...]] = field(default_factory=list)
    expiry: dict[str, int] = field(default_factory=dict)  # token -> expires_on

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append(scopes)
        token = AccessToken(f"entra-token-{len(self.calls)}", int(self.clock() + self.lifetime))
        self.expiry[token.token] = token.expires_on
        return token


@dataclass(frozen=True)
class KeyVaultSecret:
    name: str
    value: str


class FakeSecretClient:
    """``azure.keyvault.secrets.SecretClient``'s constructor and ``get_secret``."""

    secrets: dict[tuple[str, str | None], str] = {}  # noqa: RUF012 - set per test
    instances: list[FakeSecretClient] = []  # noqa: RUF012

    def __init__(self, vault_url: str, credential: Any, **kwargs: Any) -> None:
        self.vault_url, self.credential = vault_url, credential
        self.requests: list[tuple[str, str | None]] = []
        FakeSecretClient.instances.append(self)

    def get_secret(self, name: str, version: str | None = None, **kwargs: Any) -> KeyVaultSecret:
        self.requests.append((name, version))
        return KeyVaultSecret(name, self.secrets[(name, version)])


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """None of the connection settings, whatever the shell or another fixture set."""
    for name in AZURE_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    FakeSecretClient.instances = []
    connections.credential_for.cache_clear()
    return monkeypatch


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Drive the cache's notion of time (it measures connection age with ``time.monotonic``)."""
    c = Clock()
    monkeypatch.setattr(connections.time, "monotonic", c)
    return c


def local(conninfo: str, dsn: str) -> str:
    """An Entra plan's conninfo pointed at the local test database (no TLS there)."""
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    target = psycopg.conninfo.conninfo_to_dict(dsn)
    params.update(
        host=target.get("host", "127.0.0.1"), port=target.get("port", "5432"), dbname=target["dbname"], sslmode="disable"
    )
    params["user"] = target.get("user", "postgres")
    return psycopg.conninfo.make_conninfo(**params)


# --- plan(): which way to connect -----------------------------------------------------------------


def test_a_dsn_wins_and_is_used_as_is(no_settings):
    no_settings.setenv("POSTGRES_DSN", "host=db user=app password=s3cret dbname=pipeline")
    no_settings.setenv("POSTGRES_DSN_SECRET_URI", "https://kv.vault.azure.net/secrets/dsn")
    no_settings.setenv("POSTGRES_HOST", "server.postgres.database.azure.com")
    p = connections.plan(credential=FakeCredential(), secret_client_factory=FakeSecretClient)
    assert p.conninfo == "host=db user=app password=s3cret dbname=pipeline"
    assert p.password is None
    assert "s3cret" not in p.describe
    assert FakeSecretClient.instances == []


def test_a_key_vault_secret_is_read_with_the_credential_and_beats_entra(no_settings):
    credential = FakeCredential()
    FakeSecretClient.secrets = {("pg-dsn", None): "host=ext user=etl password=hunter2 dbname=warehouse"}
    no_settings.setenv("POSTGRES_DSN_SECRET_URI", "https://kv-test.vault.azure.net/secrets/pg-dsn")
    no_settings.setenv("POSTGRES_HOST", "server.postgres.database.azure.com")
    p = connections.plan(credential=credential, secret_client_factory=FakeSecretClient)
    (client,) = FakeSecretClient.instances
    assert client.vault_url == "https://kv-test.vault.azure.net"
    assert client.credential is credential
    assert client.requests == [("pg-dsn", None)]
    assert p.conninfo == "host=ext user=etl password=hunter2 dbname=warehouse"
    assert p.password is None
    assert "hunter2" not in p.describe and "kv-test" in p.describe
    assert credential.calls == [], "no Entra token is needed when the DSN comes from Key Vault"


def test_a_secret_version_in_the_uri_is_passed_on(no_settings):
    FakeSecretClient.secrets = {("pg-dsn", "0123abcd"): "host=ext dbname=w"}
    no_settings.setenv("POSTGRES_DSN_SECRET_URI", "https://kv.vault.azure.net/secrets/pg-dsn/0123abcd")
    assert connections.plan(credential=FakeCredential(), secret_client_factory=FakeSecretClient).conninfo == "host=ext dbname=w"
    assert FakeSecretClient.instances[0].requests == [("pg-dsn", "0123abcd")]


@pytest.mark.parametrize(
    "uri", ["https://kv.vault.azure.net/keys/pg-dsn", "https://kv.vault.azure.net/secrets", "https://kv.vault.azure.net/"]
)
def test_a_uri_that_names_no_secret_is_refused(no_settings, uri):
    no_settings.setenv("POSTGRES_DSN_SECRET_URI", uri)
    with pytest.raises(ValueError, match="POSTGRES_DSN_SECRET_URI"):
        connections.plan(credential=FakeCredential(), secret_client_factory=FakeSecretClient)


def test_the_secret_path_uses_the_managed_identity_by_default(no_settings):
    built: list[dict[str, Any]] = []

    def default_credential(**kwargs: Any) -> FakeCredential:
        built.append(kwargs)
        return FakeCredential()

    no_settings.setattr("azure.identity.DefaultAzureCredential", default_credential)
    no_settings.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-00000000c1d0")
    no_settings.setenv("POSTGRES_DSN_SECRET_URI", "https://kv.vault.azure.net/secrets/pg-dsn")
    FakeSecretClient.secrets = {("pg-dsn", None): "host=ext dbname=w"}
    connections.plan(secret_client_factory=FakeSecretClient)
    assert built == [{"managed_identity_client_id": "00000000-0000-0000-0000-00000000c1d0"}]


def test_entra_plan_fetches_a_token_for_each_new_connection(no_settings):
    credential = FakeCredential()
    no_settings.setenv("POSTGRES_HOST", "psql-x.postgres.database.azure.com")
    no_settings.setenv("POSTGRES_DATABASE", "pipeline")
    no_settings.setenv("POSTGRES_USER", "id-func-x")
    p = connections.plan(credential=credential)
    params = psycopg.conninfo.conninfo_to_dict(p.conninfo)
    assert params == {
        "host": "psql-x.postgres.database.azure.com",
        "dbname": "pipeline",
        "user": "id-func-x",
        "sslmode": "require",
    }
    assert "password" not in params, "the token is never part of the conninfo"
    assert credential.calls == [], "no token before a connection is opened"
    assert p.password is not None
    assert (p.password(), p.password()) == ("entra-token-1", "entra-token-2")
    assert credential.calls == [(connections.ENTRA_SCOPE,)] * 2
    assert connections.ENTRA_SCOPE == "https://ossrdbms-aad.database.windows.net/.default"


def test_entra_plan_defaults_the_database_and_requires_the_role(no_settings):
    no_settings.setenv("POSTGRES_HOST", "psql-x.postgres.database.azure.com")
    with pytest.raises(RuntimeError, match="POSTGRES_USER"):
        connections.plan(credential=FakeCredential())
    no_settings.setenv("POSTGRES_USER", "id-func-x")
    assert psycopg.conninfo.conninfo_to_dict(connections.plan(credential=FakeCredential()).conninfo)["dbname"] == "postgres"


def test_entra_plan_uses_the_user_assigned_identity(no_settings):
    built: list[dict[str, Any]] = []
    no_settings.setattr("azure.identity.DefaultAzureCredential", lambda **kw: built.append(kw) or FakeCredential())
    no_settings.setenv("POSTGRES_HOST", "psql-x.postgres.database.azure.com")
    no_settings.setenv("POSTGRES_USER", "id-func-x")
    connections.plan()
    no_settings.setenv("AZURE_CLIENT_ID", "c1d")
    connections.plan()
    assert built == [{}, {"managed_identity_client_id": "c1d"}]


def test_nothing_configured_is_an_error(no_settings):
    with pytest.raises(RuntimeError, match="no PostgreSQL configured"):
        connections.plan()


# --- connect() and ConnectionCache: real connections ------------------------------------------------


@pytest.fixture
def entra(pg_dsn: str, no_settings: pytest.MonkeyPatch, clock: Clock):
    """An Entra plan as the Function App gets it, aimed at a fresh local database; returns the
    credential (whose tokens expire on ``clock``) and the plan."""
    credential = FakeCredential(clock=clock, lifetime=3600)
    no_settings.setenv("POSTGRES_HOST", "psql-x.postgres.database.azure.com")
    no_settings.setenv("POSTGRES_DATABASE", "pipeline")
    no_settings.setenv("POSTGRES_USER", "id-func-x")
    p = connections.plan(credential=credential)
    return credential, connections.ConnectionPlan(local(p.conninfo, pg_dsn), password=p.password, describe=p.describe)


def test_connect_sends_a_fresh_token_as_the_password(entra):
    credential, p = entra
    with connections.connect(p) as first, connections.connect(p) as second:
        assert (first.info.password, second.info.password) == ("entra-token-1", "entra-token-2")
        assert first.autocommit and first.info.parameter_status("application_name") == "csv-pipeline"
        assert first.execute("SELECT 1").fetchone() == (1,)
    assert len(credential.calls) == 2


def test_the_cache_reuses_a_connection_within_its_lifetime(entra, clock):
    credential, p = entra
    cache = connections.ConnectionCache(lambda: connections.connect(p), max_lifetime=1800)
    first = cache.get()
    clock.advance(1799)
    assert cache.get() is first
    assert len(credential.calls) == 1
    cache.discard()


def test_token_expiry_forces_a_new_connection(entra, clock):
    """Past max_lifetime the cache closes the connection and opens another with a newly fetched
    token; with max_lifetime under the token lifetime, the connection handed out was always
    opened with a token that has not expired yet."""
    credential, p = entra
    assert credential.lifetime > connections.MAX_LIFETIME_SECONDS
    cache = connections.ConnectionCache(lambda: connections.connect(p), max_lifetime=connections.MAX_LIFETIME_SECONDS)
    first = cache.get()
    assert first.info.password == "entra-token-1"
    clock.advance(connections.MAX_LIFETIME_SECONDS + 1)
    second = cache.get()
    assert second is not first and first.closed
    assert second.info.password == "entra-token-2"
    assert second.execute("SELECT 1").fetchone() == (1,)

    # Three hours of invocations every five minutes: a new token about every half hour, and
    # never a connection whose token has expired.
    opened = {second.info.backend_pid}
    for _ in range(36):
        clock.advance(300)
        conn = cache.get()
        assert credential.expiry[conn.info.password] > clock(), "a connection outlived its token"
        assert conn.execute("SELECT 1").fetchone() == (1,)
        opened.add(conn.info.backend_pid)
    assert 6 <= len(opened) <= 7
    assert credential.calls == [(connections.ENTRA_SCOPE,)] * len(credential.expiry)
    cache.discard()


def test_a_broken_or_closed_connection_is_replaced(entra, pg_dsn):
    _, p = entra
    cache = connections.ConnectionCache(lambda: connections.connect(p))
    first = cache.get()
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError):
        first.execute("SELECT 1")
    assert first.broken or first.closed
    second = cache.get()
    assert second is not first and second.execute("SELECT 1").fetchone() == (1,)
    second.close()
    third = cache.get()
    assert third is not second and third.info.password == "entra-token-3"
    cache.discard()
    assert third.closed
    assert cache.get() is not third
    cache.discard()


def test_each_thread_has_its_own_connection(entra):
    _, p = entra
    cache = connections.ConnectionCache(lambda: connections.connect(p))
    seen: dict[str, tuple[int, str]] = {}
    both_connected = threading.Barrier(2, timeout=10)

    def work(name: str) -> None:
        conn = cache.get()
        both_connected.wait()  # both connections are open at once
        assert cache.get() is conn
        seen[name] = (conn.info.backend_pid, conn.info.password)
        both_connected.wait()
        cache.discard()

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["t0"][0] != seen["t1"][0]
    assert {seen["t0"][1], seen["t1"][1]} == {"entra-token-1", "entra-token-2"}


def test_a_key_vault_dsn_connects(pg_dsn, no_settings):
    """The secret path end to end: the DSN read from the (stand-in) vault opens a real connection."""
    FakeSecretClient.secrets = {("pg-dsn", None): pg_dsn}
    no_settings.setenv("POSTGRES_DSN_SECRET_URI", "https://kv.vault.azure.net/secrets/pg-dsn")
    p = connections.plan(credential=FakeCredential(), secret_client_factory=FakeSecretClient)
    with connections.connect(p) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"],)
