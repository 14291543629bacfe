#!/usr/bin/env bash
# Benchmark the unified model: merge N HubSpot and N Salesforce contacts
# (30% the same people) in full, then after 1% of them changed, and check a
# full rebuild gives the same model. --size 200000 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
bash scripts/install.sh
exec .venv/bin/python bench/merge_bench.py "$@"
