#!/usr/bin/env bash
# The demo: install everything, start PostgreSQL 15 and the HubSpot and
# Salesforce mocks on 127.0.0.1, sync HubSpot's contacts, companies and deals
# and Salesforce's accounts, contacts, leads, opportunities and users, show
# what landed, change a few records in the "CRMs" and show incremental syncs
# moving only those, then run a sync as a background job.
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
SF_REFRESH=5Aep861demo.refresh.token
rm -rf "$DIR"
bash scripts/pg.sh start "$DIR" "$PORT" "shared_preload_libraries = 'pg_crm_sync'" "crm_sync.database = 'crm_demo'"
target/release/crm-mock hubspot --port 0 --contacts 20000 --companies 2000 --deals 3000 --token "$TOKEN" > "$DIR.mock" &
MOCK_PID=$!
target/release/crm-mock salesforce --port 0 --accounts 5000 --contacts 8000 --leads 3000 \
    --opportunities 4000 --users 40 --refresh-token "$SF_REFRESH" > "$DIR.sfmock" &
SF_PID=$!
cleanup() {
    if [ "$keep" != "--keep" ]; then
        kill "$MOCK_PID" "$SF_PID" 2>/dev/null || true
        bash scripts/pg.sh stop "$DIR"
    fi
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening "$DIR.mock" 2>/dev/null && break; sleep 0.05; done
MOCK_URL="http://$(sed -n 's/^listening on //p' "$DIR.mock")"
for _ in $(seq 100); do grep -q listening "$DIR.sfmock" 2>/dev/null && break; sleep 0.05; done
SF_URL="http://$(sed -n 's/^listening on //p' "$DIR.sfmock")"

PSQL=(psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -P pager=off)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE crm_demo"
run() { echo; echo "crm_demo=# $1"; "${PSQL[@]}" -d crm_demo -c "$1"; }

echo "== PostgreSQL 15 on 127.0.0.1:$PORT, HubSpot mock on $MOCK_URL, Salesforce mock on $SF_URL"
run "CREATE EXTENSION pg_crm_sync"
run "SELECT crm_sync.create_source('hubspot_demo', 'hubspot', '{\"base_url\": \"$MOCK_URL\"}', '{\"access_token\": \"$TOKEN\"}')"
run "SELECT stream, mode, status, records_upserted, records_deleted, api_calls, pg_size_pretty(bytes_received) AS received, duration, watermark FROM crm_sync.sync('hubspot_demo')"
run "SELECT id, email, firstname, lastname, lifecyclestage, createdate, _updated_at FROM hubspot_demo.contacts ORDER BY id::int LIMIT 5"
run "SELECT id, name, domain, industry, numberofemployees, annualrevenue FROM hubspot_demo.companies ORDER BY id::int LIMIT 3"
run "SELECT id, dealname, amount, dealstage, closedate FROM hubspot_demo.deals ORDER BY id::int LIMIT 3"

echo
echo "== Salesforce: OAuth refresh-token flow; Bulk API 2.0 for objects over bulk_threshold records"
run "SELECT crm_sync.create_source('sf_demo', 'salesforce', '{\"login_url\": \"$SF_URL\", \"bulk_threshold\": 4000, \"default_region\": \"US\"}', '{\"client_id\": \"3MVG9mock.client.id\", \"client_secret\": \"mock-client-secret\", \"refresh_token\": \"$SF_REFRESH\"}')"
run "SELECT stream, mode, status, records_upserted, records_deleted, api_calls, pg_size_pretty(bytes_received) AS received, duration, watermark FROM crm_sync.sync('sf_demo')"
run "SELECT id, name, industry, annualrevenue, numberofemployees, billingaddress->>'city' AS city, tier__c, systemmodstamp FROM sf_demo.account WHERE _deleted_at IS NULL ORDER BY id LIMIT 4"
run "SELECT object, label, custom, stream FROM crm_sync.discover('sf_demo') WHERE custom OR stream IS NOT NULL ORDER BY custom, object"

echo
echo "== Meanwhile, in the CRM: 2 contacts edited, 1 created, 1 archived; 1 deal won"
curl -sf -X POST "$MOCK_URL/_mock/contacts/upsert" -H 'content-type: application/json' \
    -d '{"records":[{"id":"1","properties":{"firstname":"Ada","lifecyclestage":"customer"}},{"id":"2","properties":{"phone":"+44 20 7946 0000"}},{"properties":{"email":"grace@example.com","firstname":"Grace","lastname":"Hopper"}}]}' >/dev/null
curl -sf -X POST "$MOCK_URL/_mock/contacts/archive" -H 'content-type: application/json' -d '{"ids":["3"]}' >/dev/null
curl -sf -X POST "$MOCK_URL/_mock/deals/upsert" -H 'content-type: application/json' \
    -d '{"records":[{"id":"1","properties":{"dealstage":"closedwon","amount":"125000"}}]}' >/dev/null

run "SELECT stream, mode, status, records_upserted, records_deleted, api_calls, duration, watermark FROM crm_sync.sync('hubspot_demo')"

echo
echo "== Meanwhile, in Salesforce: 2 accounts edited, 1 opportunity deleted"
ACC=$("${PSQL[@]}" -d crm_demo -At -c "SELECT string_agg(format('{\"Id\":\"%s\",\"Tier__c\":\"Platinum\"}', id), ',') FROM (SELECT id FROM sf_demo.account WHERE _deleted_at IS NULL ORDER BY id LIMIT 2) a")
OPP=$("${PSQL[@]}" -d crm_demo -At -c "SELECT id FROM sf_demo.opportunity WHERE _deleted_at IS NULL ORDER BY id LIMIT 1")
curl -sf -X POST "$SF_URL/_mock/sf/Account/upsert" -H 'content-type: application/json' -d "{\"records\":[$ACC]}" >/dev/null
curl -sf -X POST "$SF_URL/_mock/sf/Opportunity/delete" -H 'content-type: application/json' -d "{\"ids\":[\"$OPP\"]}" >/dev/null
run "SELECT stream, mode, status, records_upserted, records_deleted, api_calls, duration, watermark FROM crm_sync.sync('sf_demo')"
run "SELECT id, email, firstname, lifecyclestage, phone, _deleted_at IS NOT NULL AS deleted, _run_id FROM hubspot_demo.contacts WHERE _run_id = (SELECT max(run_id) FROM crm_sync.runs WHERE stream = 'contacts') ORDER BY id::int"
run "SELECT run_id, stream, mode, status, records, records_deleted, api_calls, finished_at - started_at AS took FROM crm_sync.runs ORDER BY run_id"

echo
echo "== The unified model: every sync merged what it landed into schema crm (cleaned, matched, with lineage)"
run "SELECT (SELECT count(*) FROM crm.contacts) AS contacts, (SELECT count(*) FROM crm.companies) AS companies, (SELECT count(*) FROM crm.deals) AS deals, (SELECT count(*) FROM crm.identities) AS source_records"
run "SELECT id, first_name, last_name, email, phone, country, company_id, sources FROM crm.contacts WHERE company_id IS NOT NULL ORDER BY id LIMIT 3"
run "SELECT source, stream, field, valid, invalid, invalid_samples[1:2] AS samples FROM crm_sync.quality WHERE invalid > 0 ORDER BY source, stream, field"

echo
echo "== In the background: queue a job, follow it, wait for it (a launcher worker runs it)"
curl -sf -X POST "$MOCK_URL/_mock/contacts/upsert" -H 'content-type: application/json' \
    -d '{"records":[{"id":"4","properties":{"lifecyclestage":"opportunity"}}]}' >/dev/null
JOB=$("${PSQL[@]}" -d crm_demo -At -c "SELECT crm_sync.sync_async('hubspot_demo')")
echo "crm_demo=# SELECT crm_sync.sync_async('hubspot_demo');  -- job $JOB"
run "SELECT crm_sync.wait($JOB, '60 seconds') AS status"
run "SELECT job_id, source, status, attempts, records, run_ids, finished_at - started_at AS took FROM crm_sync.jobs"
if [ "$keep" = "--keep" ]; then
    echo; echo "Still running: psql -h 127.0.0.1 -p $PORT -U postgres crm_demo   (mocks: $MOCK_URL pid $MOCK_PID, $SF_URL pid $SF_PID)"
fi
