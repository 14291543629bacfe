#!/usr/bin/env bash
# Benchmark a full and an incremental sync of HubSpot contacts, of
# Salesforce accounts (REST query API and Bulk API 2.0), of Pipedrive
# persons (the shipped spec, through the declarative rest connector), of
# Dynamics 365 contacts and of Zoho CRM contacts at 200,000 and 1,000,000
# records; override with --sizes 50000,200000 and
# --providers hubspot,salesforce,pipedrive,dynamics,zoho (any of them).
# Prints, per provider/mode (hs, sf-rest, sf-bulk, pd, dv, zo) and size, the default path (sync, then merge), the
# sync alone and the merge alone, each with records/s, MB/s, API calls and the
# backend's peak memory, COPY of the same rows for scale, then the medians
# (and Pipedrive's records/s as a share of HubSpot's when both ran).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
bash scripts/install.sh
exec .venv/bin/python bench/bench.py "$@"
