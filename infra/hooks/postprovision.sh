#!/bin/sh
# azd postprovision hook: map the Function App's managed identity to a PostgreSQL role.
# Needs Python 3.11+; uses the project's .venv (created here with the two packages the script
# needs, at the versions requirements.txt pins, if it does not exist yet).
set -eu
cd "$(dirname "$0")/../.."

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "Creating .venv for the post-provision step"
  python3 -m venv .venv
fi
if ! "$PY" -c "import psycopg, azure.identity" 2>/dev/null; then
  grep -E '^(psycopg|azure-identity)' requirements.txt | xargs "$PY" -m pip install --quiet --disable-pip-version-check
fi

exec "$PY" infra/scripts/postgres_roles.py
