"""Map the Function App's managed identity to a PostgreSQL role (the azd postprovision hook).

The server accepts Microsoft Entra tokens only. The deployer is its Entra administrator
(``POSTGRES_ADMIN_USER``); connected as that, this script

1. creates the role ``POSTGRES_USER`` for the identity's object id with
   ``pgaadauth_create_principal_with_oid`` (skipped when the role exists);
2. grants it ``CONNECT, CREATE, TEMPORARY`` on ``POSTGRES_DATABASE``: the loader creates the
   ledger schema (``pipeline``) and each contract's schema (``analytics``) at the first load,
   and stages aggregates in temporary tables, so the role needs CREATE on the database and
   owns what it creates (no schema has to exist beforehand);
3. tries to make the administrator a member of that role, so that you can read the app's
   tables as the administrator. PostgreSQL 16 only lets a role grant memberships it holds
   ADMIN OPTION on; if the server refuses, the script says so and carries on.

Everything is idempotent: run it again after every ``azd provision``. The token comes from
``azd auth login`` (the identity azd provisions with, which is the administrator), else from
``az login``. Reads the azd environment's values, which azd passes to hooks as variables.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

# The resource of Azure Database for PostgreSQL tokens (shared/database.py uses the same).
ENTRA_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
REQUIRED = ("POSTGRES_HOST", "POSTGRES_DATABASE", "POSTGRES_ADMIN_USER", "POSTGRES_USER", "AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID")


def token_provider() -> Callable[[], str]:
    from azure.identity import AzureCliCredential, AzureDeveloperCliCredential, ChainedTokenCredential

    tenant = os.environ.get("AZURE_TENANT_ID") or None
    credential = ChainedTokenCredential(AzureDeveloperCliCredential(tenant_id=tenant), AzureCliCredential(tenant_id=tenant))
    return lambda: credential.get_token(ENTRA_SCOPE).token


def connect_as_admin(
    host: str, admin: str, token: Callable[[], str], attempts: int = 10, delay: float = 15.0
) -> psycopg.Connection:
    """Connect to the ``postgres`` database (where the pgaadauth functions live), retrying while
    a fresh firewall rule, DNS record or administrator mapping propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return psycopg.connect(
                host=host, dbname="postgres", user=admin, password=token(), sslmode="require", connect_timeout=10, autocommit=True
            )
        except psycopg.OperationalError as error:
            if attempt == attempts:
                raise
            print(f"  PostgreSQL not reachable yet ({str(error).strip().splitlines()[0]}); retrying in {delay:.0f} s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def map_identity(conn: psycopg.Connection, role: str, object_id: str, database: str, admin: str | None = None) -> list[str]:
    """Create the identity's role if missing, grant it what the loader needs; return what was done."""
    done = []
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
        conn.execute("SELECT * FROM pgaadauth_create_principal_with_oid(%s, %s, 'service', false, false)", (role, object_id))
        done.append(f"created role {role} for the managed identity {object_id}")
    else:
        done.append(f"role {role} exists")
    conn.execute(
        sql.SQL("GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(role))
    )
    # A GRANT by a role that may not grant only warns ("no privileges were granted"): check.
    if conn.execute("SELECT has_database_privilege(%s, %s, 'CREATE')", (role, database)).fetchone() != (True,):
        raise RuntimeError(f"could not grant CREATE on database {database} to {role}: is the administrator its owner?")
    done.append(f"granted CONNECT, CREATE, TEMPORARY on database {database} to {role}")
    if admin:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(admin)))
            done.append(f"{admin} is a member of {role}: it can read the app's tables")
        except psycopg.errors.InsufficientPrivilege as error:
            done.append(
                f"{admin} could not join {role} ({str(error).strip().splitlines()[0]}): it sees the app's tables in the "
                "catalog and pg_stat_user_tables, but cannot read their rows"
            )
    return done


def main() -> int:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        print(f"missing azd environment values: {', '.join(missing)} (run `azd provision` first)", file=sys.stderr)
        return 2
    host, database = os.environ["POSTGRES_HOST"], os.environ["POSTGRES_DATABASE"]
    admin, role = os.environ["POSTGRES_ADMIN_USER"], os.environ["POSTGRES_USER"]
    print(f"Mapping the Function App's identity to PostgreSQL role {role} on {host} (as {admin})")
    try:
        conn = connect_as_admin(host, admin, token_provider())
    except psycopg.OperationalError as error:
        print(
            f"cannot connect to {host} as {admin}: {error}\n"
            "Is your IP allowed? `azd env get-value CLIENT_IP_ADDRESS` must be this machine's public IP "
            "(then `azd provision`). Are azd and the server's administrator the same identity?",
            file=sys.stderr,
        )
        return 1
    with conn:
        try:
            for line in map_identity(conn, role, os.environ["AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID"], database, admin):
                print(f"  {line}")
        except (psycopg.Error, RuntimeError) as error:
            print(f"the role mapping failed: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
