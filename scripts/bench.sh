#!/usr/bin/env bash
# Benchmark a full and an incremental HubSpot sync at 200,000 and 1,000,000
# contacts (override with --sizes 50000,200000). Prints records/s, MB/s and
# the backend's peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
bash scripts/install.sh
exec .venv/bin/python bench/bench.py "$@"
