#!/usr/bin/env bash
# The demo: install everything, start PostgreSQL 15 and the HubSpot mock on
# 127.0.0.1, sync contacts, companies and deals, show what landed, change a
# few records in the "CRM" and show an incremental sync moving only those.
#   scripts/demo.sh          run and stop everything at the end
#   scripts/demo.sh --keep   leave Postgres and the mock running to explore
set -euo pipefail
cd "$(dirname "$0")/.."
keep=${1:-}
bash scripts/setup.sh
bash scripts/install.sh

DIR=/tmp/pg_crm_sync_demo
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TOKEN=pat-na1-demo-token
rm -rf "$DIR"
bash scripts/pg.sh start "$DIR" "$PORT"
target/release/crm-mock hubspot --port 0 --contacts 20000 --companies 2000 --deals 3000 --token "$TOKEN" > "$DIR.mock" &
MOCK_PID=$!
cleanup() {
    if [ "$keep" != "--keep" ]; then
        kill "$MOCK_PID" 2>/dev/null || true
        bash scripts/pg.sh stop "$DIR"
    fi
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening "$DIR.mock" 2>/dev/null && break; sleep 0.05; done
MOCK_URL="http://$(sed -n 's/^listening on //p' "$DIR.mock")"

PSQL=(psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -P pager=off)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE crm_demo"
run() { echo; echo "crm_demo=# $1"; "${PSQL[@]}" -d crm_demo -c "$1"; }

echo "== PostgreSQL 15 on 127.0.0.1:$PORT, HubSpot mock on $MOCK_URL"
run "CREATE EXTENSION pg_crm_sync"
run "SELECT crm_sync.create_source('hubspot_demo', 'hubspot', '{\"base_url\": \"$MOCK_URL\"}', '{\"access_token\": \"$TOKEN\"}')"
run "SELECT stream, mode, status, records_upserted, records_deleted, api_calls, pg_size_pretty(bytes_received) AS received, duration, watermark FROM crm_sync.sync('hubspot_demo')"
run "SELECT id, email, firstname, lastname, lifecyclestage, createdate, _updated_at FROM hubspot_demo.contacts ORDER BY id::int LIMIT 5"
run "SELECT id, name, domain, industry, numberofemployees, annualrevenue FROM hubspot_demo.companies ORDER BY id::int LIMIT 3"
run "SELECT id, dealname, amount, dealstage, closedate FROM hubspot_demo.deals ORDER BY id::int LIMIT 3"

echo
echo "== Meanwhile, in the CRM: 2 contacts edited, 1 created, 1 archived; 1 deal won"
curl -sf -X POST "$MOCK_URL/_mock/contacts/upsert" -H 'content-type: application/json' \
    -d '{"records":[{"id":"1","properties":{"firstname":"Ada","lifecyclestage":"customer"}},{"id":"2","properties":{"phone":"+44 20 7946 0000"}},{"properties":{"email":"grace@example.com","firstname":"Grace","lastname":"Hopper"}}]}' >/dev/null
curl -sf -X POST "$MOCK_URL/_mock/contacts/archive" -H 'content-type: application/json' -d '{"ids":["3"]}' >/dev/null
curl -sf -X POST "$MOCK_URL/_mock/deals/upsert" -H 'content-type: application/json' \
    -d '{"records":[{"id":"1","properties":{"dealstage":"closedwon","amount":"125000"}}]}' >/dev/null

run "SELECT stream, mode, status, records_upserted, records_deleted, api_calls, duration, watermark FROM crm_sync.sync('hubspot_demo')"
run "SELECT id, email, firstname, lifecyclestage, phone, _deleted_at IS NOT NULL AS deleted, _run_id FROM hubspot_demo.contacts WHERE _run_id = (SELECT max(run_id) FROM crm_sync.runs WHERE stream = 'contacts') ORDER BY id::int"
run "SELECT run_id, stream, mode, status, records, records_deleted, api_calls, finished_at - started_at AS took FROM crm_sync.runs ORDER BY run_id"
if [ "$keep" = "--keep" ]; then
    echo; echo "Still running: psql -h 127.0.0.1 -p $PORT -U postgres crm_demo   (mock: $MOCK_URL, pid $MOCK_PID)"
fi
