"""Configuration from app settings and environment variables, read here and passed inward.

Locally these come from ``local.settings.json`` (``func start``) or the shell (the runner and
the CLI); in Azure from the Function App's app settings, which ``infra/`` sets. Every name
the code reads is listed in ``SETTINGS`` so that a test can check that the Bicep sets them.
The pure core never reads a setting: the app resolves each one here and hands the value in.
The two edges read their own connection settings (``shared.storage.accounts``,
``shared.postgres.connections``), as the Functions host resolves a binding's connection.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parents[2]

SETTINGS = {
    "DataStorage": "data account connection (a connection string, or the __serviceUri family)",
    "POSTGRES_DSN": "libpq connection string (local development)",
    "POSTGRES_DSN_SECRET_URI": "Key Vault secret holding a DSN, read with the managed identity",
    "POSTGRES_HOST": "PostgreSQL host for Microsoft Entra authentication",
    "POSTGRES_DATABASE": "PostgreSQL database for Microsoft Entra authentication",
    "POSTGRES_USER": "PostgreSQL role mapped to the managed identity",
    "AZURE_CLIENT_ID": "client id of the user-assigned managed identity",
    "REPROCESS_SCHEDULE": "NCRONTAB of the nightly re-drive (default 0 0 2 * * *)",
    "REPROCESS_GRACE_MINUTES": "blobs younger than this are left to their own event (default 30)",
    "REPROCESS_BATCH": "most re-drives one night sends (default 500)",
    "RAW_RETENTION_DAYS": "raw blobs are deleted by the lifecycle policy after this many days (default 365)",
    "LAKE_RETENTION_HOURS": "the nightly vacuum keeps removed lake files this long, for time travel (default 168)",
    "PIPELINE_READER_ROLE": "a PostgreSQL role granted read access to the views (the ML application's)",
    "PIPELINE_CONTRACTS_DIR": "folder of dataset contracts (default: contracts/ in the app)",
    "PIPELINE_LEDGER_SCHEMA": "PostgreSQL schema of the ledger (default: pipeline)",
    "PIPELINE_WORK_DIR": "scratch folder for downloads and outputs (default: the system temp)",
    "PIPELINE_CHUNK_MB": "size of the record-aligned chunks a CSV is cut into (default 32)",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "Application Insights; telemetry is off without it",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD;ClientId=<id>: ingest telemetry with the identity",
}


LOCAL_SETTINGS = {
    "PIPELINE_LOG_LEVEL": "log level of the command line and the local runner (default INFO)",
    "PIPELINE_LOG_FORMAT": "json for JSON lines from the command line, the runner's progress included (default text)",
    "PIPELINE_RUNNER_LEASE_SECONDS": "how long the local runner hides a message it works on (default 300)",
}
"""Read by local tools only (the CLI and the runner): never app settings."""


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def contracts_dir() -> Path:
    return Path(env("PIPELINE_CONTRACTS_DIR") or APP_ROOT / "contracts")


def reprocess_grace_minutes() -> float:
    return float(env("REPROCESS_GRACE_MINUTES") or 30)


def raw_retention_days() -> float:
    return float(env("RAW_RETENTION_DAYS") or 365)


def lake_retention_hours() -> int:
    """How long a Delta table keeps the files a commit removed (time travel back that far)."""
    return int(float(env("LAKE_RETENTION_HOURS") or 168))


def reader_role() -> str | None:
    return env("PIPELINE_READER_ROLE")


def reprocess_batch() -> int:
    return int(env("REPROCESS_BATCH") or 500)


def ledger_schema() -> str:
    return env("PIPELINE_LEDGER_SCHEMA") or "pipeline"


def work_dir() -> Path | None:
    value = env("PIPELINE_WORK_DIR")
    return Path(value) if value else None


def chunk_bytes() -> int:
    return int(float(env("PIPELINE_CHUNK_MB") or 32) * 1024 * 1024)


@cache
def host_config() -> dict:
    """``host.json``: the runner and every queue sender follow its queue settings."""
    return json.loads((APP_ROOT / "host.json").read_text())


def function_timeout_seconds() -> float:
    """``functionTimeout`` of host.json: the longest an invocation can run before the host ends it."""
    h, m, s = (float(x) for x in str(host_config().get("functionTimeout", "00:30:00")).split(":"))
    return h * 3600 + m * 60 + s


def queue_settings() -> dict:
    return host_config().get("extensions", {}).get("queues", {})


def message_encoding() -> str:
    """``base64`` (the host's default) or ``none``: how queue message bodies are encoded."""
    return str(queue_settings().get("messageEncoding", "base64")).lower()
