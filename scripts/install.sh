#!/usr/bin/env bash
# Build the extension and the mock CRMs in release mode and install the
# extension into the system PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
cargo build --release -q -p crm-mock
sudo_flag=()
[ "$(id -u)" -eq 0 ] || sudo_flag=(--sudo)
log=$(mktemp)
if ! cargo pgrx install --release --pg-config "$PG_CONFIG" "${sudo_flag[@]}" >"$log" 2>&1; then
    cat "$log"
    rm -f "$log"
    exit 1
fi
rm -f "$log"
echo "install: pg_crm_sync installed into $($PG_CONFIG --pkglibdir)"
