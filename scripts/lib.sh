# Shared steps of scripts/demo, scripts/test and .ci/run. Source it; every step is idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_python() {
  # A virtualenv with the app's and the developer tools' pinned packages.
  local want stamp
  want="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)"
  stamp=".venv/.installed-$want"
  if [ ! -x "$PY" ]; then
    say "creating .venv ($(python3 --version))"
    python3 -m venv .venv
  fi
  if [ ! -f "$stamp" ]; then
    say "installing Python packages (requirements-dev.txt)"
    "$PY" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    rm -f .venv/.installed-* && touch "$stamp"
  fi
}

ensure_bench_packages() {
  # The benchmark's contenders (DuckDB, pandas, ...): scripts/bench runs them, and the test suite
  # checks that each one computes what the pipeline computes. Never part of the Function App.
  local want
  want="$(sha256sum bench/requirements.txt | cut -c1-16)"
  if [ ! -f ".venv/.bench-installed-$want" ]; then
    say "installing the benchmark's packages (bench/requirements.txt)"
    "$PY" -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
    rm -f .venv/.bench-installed-* && touch ".venv/.bench-installed-$want"
  fi
}

ensure_node() {
  # Azurite, pinned in package.json / package-lock.json.
  if [ ! -x node_modules/.bin/azurite ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "installing Azurite from npm (package-lock.json)"
    npm ci --no-audit --no-fund --loglevel=error
  fi
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

ensure_azurite() {
  # The emulator on its default ports, data in .azurite/ (git-ignored).
  if port_open 127.0.0.1 10000 && port_open 127.0.0.1 10001; then
    return
  fi
  say "starting Azurite (blob :10000, queue :10001), data in .azurite/"
  mkdir -p .azurite
  nohup node_modules/.bin/azurite --silent --disableTelemetry --skipApiVersionCheck --location .azurite \
    --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 >.azurite/azurite.log 2>&1 &
  echo $! >.azurite/pid
  for _ in $(seq 100); do
    port_open 127.0.0.1 10000 && port_open 127.0.0.1 10001 && return
    sleep 0.1
  done
  echo "Azurite did not start; see .azurite/azurite.log" >&2
  exit 1
}

ensure_postgres() {
  # POSTGRES_DSN when set; otherwise the local server on 127.0.0.1:5432, started if it is down.
  if [ -n "${POSTGRES_DSN:-}" ]; then
    return
  fi
  if ! port_open 127.0.0.1 5432; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
      say "starting the local PostgreSQL cluster"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    fi
  fi
  if ! port_open 127.0.0.1 5432; then
    start_private_postgres
  fi
  export POSTGRES_DSN="${PIPELINE_POSTGRES_DSN:-host=127.0.0.1 port=5432 dbname=pipeline user=postgres}"
}

start_private_postgres() {
  # No server anywhere: initialise one under .data/postgres (as a non-root user if we are root).
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  if [ -z "$bin" ] && command -v initdb >/dev/null; then bin="$(dirname "$(command -v initdb)")"; fi
  if [ -z "$bin" ]; then
    echo "No PostgreSQL found: install it (e.g. apt-get install postgresql) or set POSTGRES_DSN." >&2
    exit 1
  fi
  local data="$ROOT/.data/postgres" run=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home "$data" postgres
    run=(runuser -u postgres --)
  fi
  mkdir -p "$data"
  [ "$(id -u)" = 0 ] && chown postgres "$data"
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initialising a private PostgreSQL cluster in .data/postgres"
    "${run[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  say "starting the private PostgreSQL on 127.0.0.1:5432"
  "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -o "-c listen_addresses=127.0.0.1 -c port=5432 -k /tmp" -w start >/dev/null
}
