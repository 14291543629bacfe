#!/usr/bin/env bash
# Install everything pg_crm_sync needs on Debian 12, idempotently: PostgreSQL 15
# (server, headers, pg_cron), clang, cargo-pgrx 0.18.1 with pgrx initialised for
# PostgreSQL 15, a Python virtualenv with the end-to-end test dependencies, and
# Node with Pipedrive's official client (tests/node).
# Fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

apt_pkgs=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron libclang-dev clang sudo python3-venv openssl curl)
# Node may come from elsewhere (NodeSource bundles npm): only if missing.
command -v node >/dev/null || apt_pkgs+=(nodejs)
command -v npm >/dev/null || apt_pkgs+=(npm)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.1"; then
    echo "setup: installing cargo-pgrx 0.18.1 (takes several minutes once)"
    cargo install cargo-pgrx --version 0.18.1 --locked
fi

if ! grep -qs "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    cargo pgrx init --pg15 "$PG_CONFIG"
fi

# Python for the end-to-end tests and the official HubSpot client check.
if [ ! -x .venv/bin/python ] || ! cmp -s tests/requirements.txt .venv/.requirements; then
    echo "setup: preparing .venv"
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
    cp tests/requirements.txt .venv/.requirements
fi
# Node for the official Pipedrive client check (tests/node, locked versions).
if ! cmp -s tests/node/package-lock.json tests/node/node_modules/.installed-lock; then
    echo "setup: installing tests/node"
    (cd tests/node && npm ci --no-audit --no-fund --silent && cp package-lock.json node_modules/.installed-lock)
fi
echo "setup: ok"
