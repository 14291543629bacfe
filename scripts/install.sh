#!/usr/bin/env bash
# Build the extension and the mock CRMs in release mode and install the
# extension into the system PostgreSQL 15.
#
# The library is packaged first and then renamed into place, never written
# over: a server with pg_crm_sync in shared_preload_libraries has the old file
# mapped, and overwriting it in place would crash that server.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
cargo build --release -q -p crm-mock
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
out=target/release/pg_crm_sync-pg15
log=$(mktemp)
if ! cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$out" >"$log" 2>&1; then
    cat "$log"
    rm -f "$log"
    exit 1
fi
rm -f "$log"
pkglib=$($PG_CONFIG --pkglibdir)
share=$($PG_CONFIG --sharedir)/extension
$SUDO install -m 755 "$out$pkglib/pg_crm_sync.so" "$pkglib/.pg_crm_sync.so.new"
$SUDO mv -f "$pkglib/.pg_crm_sync.so.new" "$pkglib/pg_crm_sync.so"
$SUDO install -m 644 "$out$share"/pg_crm_sync* "$share/"
echo "install: pg_crm_sync installed into $pkglib"
