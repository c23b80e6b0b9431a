"""The azd template (infra/, azure.yaml, hooks) agrees with the code it deploys.

* every app setting the bindings and ``shared/`` read is set by the Bicep, and the Bicep sets
  nothing else (derived from ``app.get_functions()`` and ``shared.app.settings.SETTINGS``, with the
  exceptions listed, each with its reason);
* the names the code uses (containers, queues, the blob-triggered function, accepted suffixes,
  database, ledger schema) are the names the template creates, and ``host.json``, ``azure.yaml``,
  ``pyproject.toml``, the CI definitions and the Bicep agree on the runtime;
* the security properties the deployment promises are in the templates;
* local modules are called with parameters they declare (a poor man's ``bicep build``);
* the post-provision role mapping works against a real PostgreSQL.

The Bicep is parsed by pycep-parser, which lives in ``.venv-infra`` with checkov
(``scripts/check-infra --setup`` creates it; it takes about 30 s the first time).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import tomllib
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import function_app
from shared.app import settings
from shared.core import layout
from shared.postgres import connections
from shared.storage import accounts
from shared.tools.runner import registered

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"

# --- app settings: what is deliberately not the simple "code reads it, Bicep sets it" ---------

# Read by the code, deliberately not set in Azure.
OPTIONAL_IN_AZURE = {
    "POSTGRES_DSN": "local development and tests only; in Azure it would bypass Entra authentication",
    "POSTGRES_DSN_SECRET_URI": "the Key Vault alternative to Entra, for a database that needs a password; unset by default",
    "PIPELINE_CONTRACTS_DIR": "the default, contracts/ inside the deployed package, is right",
    "PIPELINE_WORK_DIR": "the default, the instance's temporary folder, is right",
    "PIPELINE_CHUNK_MB": "the default (32 MB) fits the default instance memory (2048 MB)",
    "REPROCESS_GRACE_MINUTES": "the default (30) suits Event Grid's delivery latency",
    "REPROCESS_BATCH": "the default (500) is a sane nightly bound",
    "PIPELINE_READER_ROLE": "a role for the ML application exists only once someone creates it (docs/deploy.md)",
}

# Set by the Bicep for the Functions host, not read by our code: its own storage.
HOST_SETTINGS = {
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
}

# Read from the environment by local tools only, so not in SETTINGS and never app settings.
LOCAL_TOOLS_ONLY = settings.LOCAL_SETTINGS

# Values azd itself provides to hooks, besides the template's outputs.
AZD_VALUES = {"AZURE_ENV_NAME", "AZURE_SUBSCRIPTION_ID", "AZURE_PRINCIPAL_ID", "AZURE_LOCATION", "CLIENT_IP_ADDRESS"}


# --- the parsed templates ---------------------------------------------------------------------


@cache
def dump() -> dict[str, Any]:
    subprocess.run([str(ROOT / "scripts" / "check-infra"), "--setup"], check=True, cwd=ROOT)
    done = subprocess.run(
        [str(ROOT / ".venv-infra" / "bin" / "python"), str(INFRA / "scripts" / "run_checks.py"), "--dump-json"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(done.stdout)


def bicep(path: str) -> dict[str, Any]:
    return dump()["bicep"][path]


def body(node: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's configuration, without its loop or condition wrapper."""
    cfg = node["config"]
    while isinstance(cfg, dict) and "config" in cfg and ("loop_type" in cfg or "condition" in cfg):
        cfg = cfg["config"]
    return cfg


def var(path: str, name: str) -> Any:
    return bicep(path)["variables"][name]["value"]


def default(path: str, name: str) -> Any:
    return bicep(path)["parameters"][name].get("default")


def app_settings() -> dict[str, Any]:
    site = body(bicep("infra/app/function.bicep")["resources"]["site"])
    return {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}


def bindings() -> list[dict[str, Any]]:
    return [b for spec in registered(function_app.app) for b in (spec.trigger, *spec.outputs)]


def blob_trigger() -> Any:
    (spec,) = [s for s in registered(function_app.app) if s.kind == "blobTrigger"]
    return spec


def identity_connection(connection: str, services: set[str]) -> set[str]:
    """The settings of an identity-based connection to these storage services."""
    return {f"{connection}__{s}ServiceUri" for s in services} | {f"{connection}__credential", f"{connection}__clientId"}


# --- app settings ---------------------------------------------------------------------------------


def test_every_bicep_file_parses():
    files = {str(p.relative_to(ROOT)) for p in INFRA.rglob("*.bicep")}
    assert not dump()["errors"]
    assert set(dump()["bicep"]) == files
    assert {"infra/main.bicep", "infra/app/function.bicep", "infra/hooks/blob-subscription.bicep"} <= files


def test_the_bicep_sets_exactly_the_settings_the_code_reads():
    # From the bindings: their connections (identity-based, with the services they use) and
    # their %SETTING% expressions.
    services = {"blobTrigger": "blob", "blob": "blob", "queueTrigger": "queue", "queue": "queue"}
    connections: dict[str, set[str]] = {}
    expressions: set[str] = set()
    for b in bindings():
        if b.get("connection"):
            connections.setdefault(b["connection"], set()).add(services[b["type"]])
        expressions |= {m for v in b.values() if isinstance(v, str) for m in re.findall(r"%([^%]+)%", v)}
    assert connections == {accounts.DATA_CONNECTION: {"blob", "queue"}}, "every binding uses the data connection"
    assert expressions == {"REPROCESS_SCHEDULE"}

    # From shared/: SETTINGS, where the data connection is the prefix of its identity-based
    # family (shared/storage.py opens both the blob and the queue service through it).
    wanted = set(settings.SETTINGS) - set(OPTIONAL_IN_AZURE) - {accounts.DATA_CONNECTION} | expressions
    for connection in connections:
        wanted |= identity_connection(connection, {"blob", "queue"})

    assert set(app_settings()) == wanted | HOST_SETTINGS
    assert set(OPTIONAL_IN_AZURE) <= set(settings.SETTINGS), "an exception for a setting the code no longer reads"


def test_identity_based_connections_use_the_user_assigned_identity():
    values = app_settings()
    for connection in (accounts.DATA_CONNECTION, "AzureWebJobsStorage"):
        assert values[f"{connection}__credential"] == "managedidentity"
        assert values[f"{connection}__clientId"] == "identityClientId"
    assert values["AZURE_CLIENT_ID"] == "identityClientId"
    assert values["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD;ClientId=${identityClientId}"
    text = json.dumps(values).lower()
    for secret in ("accountkey", "sharedaccesssignature", "password", "connectionstring="):
        assert secret not in text


def env_names_read(tree: ast.AST) -> set[str]:
    """Literal names passed to settings.env(), env(), os.environ.get(), os.getenv(), os.environ[]."""
    readers = {"settings.env", "env", "os.environ.get", "os.getenv", "environ.get"}

    def dotted(node: ast.AST) -> str:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return f"{dotted(node.value)}.{node.attr}"
        return ""

    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and dotted(node.func) in readers and node.args:
            arg = node.args[0]
        elif isinstance(node, ast.Subscript) and dotted(node.value) == "os.environ":
            arg = node.slice
        else:
            continue
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            names.add(arg.value)
    return names


def test_settings_lists_every_setting_the_app_reads():
    """What the test above relies on: SETTINGS is complete (function_app.py and shared/)."""
    read = set()
    for path in [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py"))]:
        read |= env_names_read(ast.parse(path.read_text(), str(path)))
    assert read - set(settings.SETTINGS) - set(LOCAL_TOOLS_ONLY) == set()
    assert set(LOCAL_TOOLS_ONLY) <= read, "an exception for a variable nothing reads any more"


# --- names and runtime -----------------------------------------------------------------------------


def test_containers_queues_and_trigger_agree_with_the_code():
    main = "infra/main.bicep"
    assert (var(main, "rawContainer"), var(main, "curatedContainer"), var(main, "quarantineContainer")) == layout.CONTAINERS
    queues_in_bindings = {b["queueName"] for b in bindings() if "queueName" in b}
    assert set(var(main, "queues")) == set(layout.QUEUES) == queues_in_bindings
    assert blob_trigger().trigger["path"].split("/", 1)[0] == layout.RAW
    assert blob_trigger().trigger["source"] == "EventGrid", "Flex Consumption runs blob triggers from Event Grid only"
    assert var(main, "ledgerSchema") == settings.ledger_schema()
    names = ("rawContainer", "curatedContainer", "quarantineContainer", "deploymentContainer", "deadLetterContainer")
    assert len({var(main, n) for n in names}) == len(names), "five distinct containers"

    # the storage module creates all of them
    storage = body(bicep("infra/app/storage.bicep")["resources"]["containers"])
    assert storage["name"] == "container"
    loop = bicep("infra/app/storage.bicep")["resources"]["containers"]["config"]["loop_type"]["detail"]["array_name"]
    assert loop == list(names)


def test_the_blob_subscription_matches_the_trigger():
    hook = "infra/hooks/blob-subscription.bicep"
    assert default(hook, "functionName") == blob_trigger().name
    assert default(hook, "rawContainer") == layout.RAW
    assert tuple(default(hook, "acceptedSuffixes")) == layout.ACCEPTED_SUFFIXES
    assert default(hook, "deadLetterContainer") == var("infra/main.bicep", "deadLetterContainer")
    sub = body(bicep(hook)["resources"]["subscription"])["properties"]
    assert sub["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert sub["filter"]["subjectBeginsWith"] == "/blobServices/default/containers/${rawContainer}/blobs/"
    assert sub["filter"]["advancedFilters"] == [
        {"operatorType": "StringEndsWith", "key": "subject", "values": "acceptedSuffixes"}
    ]
    url = sub["destination"]["properties"]["endpointUrl"]
    assert url.endswith("/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}")
    assert sub["retryPolicy"] == {
        "maxDeliveryAttempts": "maxDeliveryAttempts",
        "eventTimeToLiveInMinutes": "eventTimeToLiveInMinutes",
    }
    dead = sub["deadLetterWithResourceIdentity"]
    assert dead["identity"]["type"] == "SystemAssigned"
    assert dead["deadLetterDestination"]["properties"]["blobContainerName"] == "deadLetterContainer"
    assert any(d["type"] == "secure" for d in bicep(hook)["parameters"]["blobsExtensionKey"]["decorators"])


def test_azure_yaml_names_the_service_and_hooks_the_template_uses():
    doc = dump()["yaml"]["azure.yaml"]
    assert doc["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert set(doc["services"]) == {var("infra/main.bicep", "serviceName")}
    (service,) = doc["services"].values()
    assert service == {"project": ".", "language": "python", "host": "function"}
    assert set(doc["hooks"]) == {"preprovision", "postprovision", "postdeploy"}
    for hook in doc["hooks"].values():
        script = ROOT / hook["run"]
        assert script.is_file() and script.stat().st_mode & 0o111, f"{script} must exist and be executable"
        subprocess.run(["sh", "-n", str(script)], check=True)


def python_versions_in_ci() -> set[str]:
    versions = set()
    for path, doc in dump()["yaml"].items():
        if path == "azure.yaml":
            continue
        text = json.dumps(doc)
        found = set(re.findall(r'"(?:python-version|versionSpec)": "([0-9.]+)"', text))
        assert found, f"{path} sets no Python version"
        versions |= found
    assert len(dump()["yaml"]) >= 3, "azure.yaml, azure-pipelines.yml and a GitHub workflow"
    return versions


def test_runtime_versions_agree():
    main, function = "infra/main.bicep", "infra/app/function.bicep"
    python = default(main, "pythonVersion")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={python}", "the deployed Python is the oldest the project supports"
    assert python_versions_in_ci() == {python}, "CI tests on the Python that Azure runs"
    allowed = next(d["argument"] for d in bicep(function)["parameters"]["pythonVersion"]["decorators"] if d["type"] == "allowed")
    assert python in allowed
    runtime = body(bicep(function)["resources"]["site"])["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "pythonVersion"}

    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    bundle = host["extensionBundle"]
    assert bundle["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert bundle["version"].startswith("[4."), "Flex Consumption needs extension bundle 4.x"


def test_local_settings_template_and_bicep_share_defaults():
    values = json.loads((ROOT / "local.settings.json.template").read_text())["Values"]
    assert default("infra/main.bicep", "reprocessSchedule") == values["REPROCESS_SCHEDULE"]
    assert psycopg.conninfo.conninfo_to_dict(values["POSTGRES_DSN"])["dbname"] == var("infra/main.bicep", "databaseName")
    assert values.get("PIPELINE_LEDGER_SCHEMA", "pipeline") == var("infra/main.bicep", "ledgerSchema")


# --- security properties ---------------------------------------------------------------------------


def test_no_keys_and_no_passwords():
    account = body(bicep("infra/app/storage.bicep")["resources"]["account"])["properties"]
    assert account["allowSharedKeyAccess"] is False
    assert account["allowBlobPublicAccess"] is False
    assert account["defaultToOAuthAuthentication"] is True
    assert account["minimumTlsVersion"] == "TLS1_2"

    server = body(bicep("infra/app/database.bicep")["resources"]["server"])["properties"]
    assert server["authConfig"]["passwordAuth"] == "Disabled"
    assert server["authConfig"]["activeDirectoryAuth"] == "Enabled"
    assert "administratorLogin" not in server and "administratorLoginPassword" not in server

    vault = body(bicep("infra/app/keyvault.bicep")["resources"]["vault"])["properties"]
    assert vault["enableRbacAuthorization"] is True

    insights = body(bicep("infra/main.bicep")["modules"]["appInsights"])["params"]
    assert insights["disableLocalAuth"] is True

    site = body(bicep("infra/app/function.bicep")["resources"]["site"])
    assert site["identity"]["type"] == "UserAssigned"
    assert site["properties"]["httpsOnly"] is True
    assert site["properties"]["functionAppConfig"]["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"

    # no parameter or output of any template holds a secret, except the webhook key (secure)
    for path, template in dump()["bicep"].items():
        for name in [*template.get("parameters", {}), *template.get("outputs", {})]:
            if re.search(r"(?i)password|secret|key$|connectionstring", name):
                assert path == "infra/hooks/blob-subscription.bicep" and name == "blobsExtensionKey", f"{path}: {name}"


def test_the_identity_gets_the_documented_roles_and_no_more():
    rbac = bicep("infra/app/rbac.bicep")
    roles = var("infra/app/rbac.bicep", "roles")
    granted: dict[str, set[str]] = {}
    for resource in rbac["resources"].values():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        props = body(resource)["properties"]
        role = json.dumps(props["roleDefinitionId"])
        (role_name,) = [r for r in roles if f'"{r}"' in role]
        granted.setdefault(props["principalId"], set()).add(role_name)
    assert granted["appPrincipalId"] == {
        "storageBlobDataOwner",
        "storageQueueDataContributor",
        "storageQueueDataMessageSender",
        "storageQueueDataMessageProcessor",
        "keyVaultSecretsUser",
        "monitoringMetricsPublisher",
    }
    assert granted["eventGridPrincipalId"] == {"storageBlobDataContributor"}
    assert granted["deployerPrincipalId"] == {"storageBlobDataContributor", "keyVaultSecretsOfficer"}


def test_private_networking_covers_every_service_the_app_calls():
    main = body(bicep("infra/main.bicep")["modules"]["privateEndpoints"])
    groups = {e["groupId"] for e in main["params"]["endpoints"]}
    assert groups == {"blob", "queue", "vault", "postgresqlServer"}
    network = bicep("infra/app/network.bicep")["resources"]["vnet"]
    subnets = body(network)["properties"]["subnets"]
    assert all("networkSecurityGroup" in s["properties"] for s in subnets), "every subnet has an NSG"
    (app_subnet,) = [s for s in subnets if s["name"] == "app"]
    assert app_subnet["properties"]["delegations"][0]["properties"]["serviceName"] == "Microsoft.App/environments"


# --- wiring -------------------------------------------------------------------------------------------


def test_local_modules_get_the_parameters_they_declare():
    for path, template in dump()["bicep"].items():
        for name, module in template.get("modules", {}).items():
            if module["type"] != "local":
                continue
            target = str((ROOT / path).parent.joinpath(module["detail"]["path"]).resolve().relative_to(ROOT))
            declared = bicep(target)["parameters"]
            passed = set(body(module).get("params", {}))
            required = {p for p, spec in declared.items() if "default" not in spec}
            assert passed <= set(declared), f"{path} module {name} passes unknown {passed - set(declared)}"
            assert required <= passed, f"{path} module {name} misses {required - passed}"


def test_hooks_and_docs_use_only_values_the_template_outputs():
    outputs = set(bicep("infra/main.bicep")["outputs"]) | AZD_VALUES
    for script in sorted((INFRA / "hooks").glob("*.sh")):
        text = script.read_text()
        assigned = set(re.findall(r"^\s*([A-Z_][A-Z0-9_]*)=", text, re.MULTILINE))
        used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", text)) - assigned
        assert used <= outputs, f"{script.name} uses {used - outputs}"
    roles = load_roles_script()
    assert set(roles.REQUIRED) | {"AZURE_TENANT_ID"} <= outputs
    # docs/deploy.md runs `eval "$(azd env get-values)"`, then uses the values in its commands
    docs = (ROOT / "docs" / "deploy.md").read_text()
    code = "\n".join(re.findall(r"```bash\n(.*?)```", docs, re.DOTALL))
    assigned = set(re.findall(r"(?:export\s+)?([A-Z_][A-Z0-9_]*)=", code))
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", code)) - assigned
    assert used, "docs/deploy.md has its commands in bash blocks"
    assert used <= outputs, f"docs/deploy.md uses {used - outputs}"
    settable = set(re.findall(r"^\| `([A-Z_]+)`", docs, re.MULTILINE))
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    substituted = {m for p in parameters.values() for m in re.findall(r"\$\{([A-Z_]+)", p["value"])}
    assert settable <= substituted, f"docs/deploy.md documents settings main.parameters.json ignores: {settable - substituted}"


# --- the post-provision role mapping, against a real PostgreSQL -----------------------------------------


def load_roles_script() -> Any:
    spec = importlib.util.spec_from_file_location("postgres_roles", INFRA / "scripts" / "postgres_roles.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What Azure's pgaadauth extension does, as far as the script can tell: create a login role for
# an Entra object id. SECURITY DEFINER, like an extension function run for a non-superuser.
FAKE_PGAADAUTH = """
CREATE FUNCTION pgaadauth_create_principal_with_oid(
  role_name text, object_id text, object_type text, is_admin boolean, is_mfa boolean
) RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  EXECUTE format('CREATE ROLE %I LOGIN', role_name);
  EXECUTE format('COMMENT ON ROLE %I IS %L', role_name, object_type || ':' || object_id);
  RETURN 'Created role for ' || role_name;
END $$
"""


@pytest.fixture
def roles_db(pg_dsn: str):
    """A fresh database set up like Azure's: owned by an admin group (azure_pg_admin there), whose
    member is the Entra administrator (CREATEROLE, not superuser); plus the fake pgaadauth
    function. Afterwards the database goes first, then the cluster-wide roles."""
    suffix = uuid.uuid4().hex[:8]
    group, admin, app_role = f"admin_group_{suffix}", f"entra_admin_{suffix}", f"id-func-{suffix}"
    dbname = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    with psycopg.connect(pg_dsn, autocommit=True) as su:
        su.execute(FAKE_PGAADAUTH)
        su.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
        su.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE IN ROLE {}").format(sql.Identifier(admin), sql.Identifier(group)))
        su.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(dbname), sql.Identifier(group)))
    try:
        yield pg_dsn, dbname, admin, app_role
    finally:
        with psycopg.connect(psycopg.conninfo.make_conninfo(pg_dsn, dbname="postgres"), autocommit=True) as su:
            su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            for role in (app_role, admin, group):
                su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def test_the_scope_of_the_roles_script_is_the_apps():
    assert load_roles_script().ENTRA_SCOPE == connections.ENTRA_SCOPE


def test_the_identity_is_mapped_idempotently_and_can_create_its_schemas(roles_db):
    dsn, dbname, admin, app_role = roles_db
    roles = load_roles_script()
    object_id = str(uuid.uuid4())
    as_admin = psycopg.conninfo.make_conninfo(dsn, user=admin)
    with psycopg.connect(as_admin, autocommit=True) as conn:
        first = roles.map_identity(conn, app_role, object_id, dbname, admin)
        again = roles.map_identity(conn, app_role, object_id, dbname, admin)
    assert first[0].startswith(f"created role {app_role}") and again[0] == f"role {app_role} exists"

    with psycopg.connect(dsn, autocommit=True) as su:
        comment = su.execute(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s", (app_role,)
        ).fetchone()
        assert comment == (f"service:{object_id}",)
        for privilege in ("CONNECT", "CREATE", "TEMPORARY"):
            assert su.execute("SELECT has_database_privilege(%s, %s, %s)", (app_role, dbname, privilege)).fetchone() == (True,)

    # what the loader does at its first load, as the app's role: its own schemas, a temp table
    with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, user=app_role), autocommit=True) as app:
        app.execute("CREATE SCHEMA IF NOT EXISTS pipeline")
        app.execute("CREATE SCHEMA IF NOT EXISTS analytics")
        app.execute("CREATE TABLE analytics.t (x int)")
        app.execute("INSERT INTO analytics.t VALUES (1)")
        app.execute("CREATE TEMP TABLE staging (x int)")

    # this (PostgreSQL 15-like) server lets a CREATEROLE administrator join the app's role, so it
    # reads the app's tables; the last line of the mapping said so
    assert first[-1] == f"{admin} is a member of {app_role}: it can read the app's tables"
    with psycopg.connect(as_admin, autocommit=True) as conn:
        assert conn.execute("SELECT x FROM analytics.t").fetchone() == (1,)


def test_an_administrator_that_may_not_join_the_role_is_told_and_not_stopped(roles_db):
    """PostgreSQL 16 refuses memberships the granter holds no ADMIN OPTION on; the mapping must
    still succeed. An administrator without CREATEROLE is refused the same way here."""
    dsn, dbname, admin, app_role = roles_db
    with psycopg.connect(dsn, autocommit=True) as su:
        su.execute(sql.SQL("ALTER ROLE {} NOCREATEROLE").format(sql.Identifier(admin)))
        su.execute(
            sql.SQL("GRANT CREATE, CONNECT ON DATABASE {} TO {} WITH GRANT OPTION").format(
                sql.Identifier(dbname), sql.Identifier(admin)
            )
        )
        su.execute(
            sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {} WITH GRANT OPTION").format(
                sql.Identifier(dbname), sql.Identifier(admin)
            )
        )
    with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, user=admin), autocommit=True) as conn:
        done = load_roles_script().map_identity(conn, app_role, str(uuid.uuid4()), dbname, admin)
        assert conn.execute("SELECT 1").fetchone() == (1,), "the connection is usable after the refusal"
    assert done[0].startswith("created role") and "could not join" in done[-1]


def test_a_grant_that_does_not_take_is_an_error(roles_db):
    """PostgreSQL only warns when a GRANT grants nothing; the mapping checks and fails."""
    dsn, dbname, admin, app_role = roles_db
    with psycopg.connect(dsn, autocommit=True) as su:
        su.execute(sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(dbname)))
    admin_dsn = psycopg.conninfo.make_conninfo(dsn, user=admin)
    with psycopg.connect(admin_dsn, autocommit=True) as conn, pytest.raises(RuntimeError, match="could not grant CREATE"):
        load_roles_script().map_identity(conn, app_role, str(uuid.uuid4()), dbname, admin)
