#!/usr/bin/env bash
# The whole test suite: lints, plain Rust tests (engine, connectors, HTTP,
# mock), in-database #[pg_test]s, and end-to-end tests of the SQL API against
# the mock CRMs on a real PostgreSQL 15 cluster. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== lint"
cargo fmt --all -- --check
cargo clippy -q --workspace --all-targets -- -D warnings

echo "== unit tests (no database)"
cargo test -q -p crm_sync_core -p crm-mock

echo "== in-database tests (cargo pgrx test)"
PGRX_DATA=/tmp/pg_crm_sync-pgrx-tests
mkdir -p "$PGRX_DATA" && chown postgres:postgres "$PGRX_DATA" 2>/dev/null || true
cargo pgrx test pg15 --runas postgres --pgdata "$PGRX_DATA/pg15"

echo "== end-to-end tests"
bash scripts/install.sh
.venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider "$@"
