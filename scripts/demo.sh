#!/usr/bin/env bash
# The demo: install everything, start PostgreSQL 15 and the HubSpot,
# Salesforce and Pipedrive mocks on 127.0.0.1 (500 of their people and 125
# of their companies are in every CRM, typed differently: see
# tests/mock/src/people.rs), sync HubSpot's contacts, companies and deals,
# Salesforce's accounts, contacts, leads, opportunities and users, and
# Pipedrive's persons, organizations, deals, activities and users (a spec,
# no connector code), show what landed, change a few records in the
# "CRMs" and show incremental syncs moving only those, run a sync as a
# background job and put one on a schedule, then show the unified model
# (people merged across the CRMs, with lineage; merged companies; invalid
# values) and crm_sync.status.
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
PD_TOKEN=pd-demo-token
rm -rf "$DIR"
bash scripts/pg.sh start "$DIR" "$PORT" "shared_preload_libraries = 'pg_crm_sync'" "crm_sync.database = 'crm_demo'"
target/release/crm-mock hubspot --port 0 --contacts 20000 --companies 2000 --deals 3000 --token "$TOKEN" \
    --shared-people 500 > "$DIR.mock" &
MOCK_PID=$!
target/release/crm-mock salesforce --port 0 --accounts 5000 --contacts 8000 --leads 3000 \
    --opportunities 4000 --users 40 --refresh-token "$SF_REFRESH" --shared-people 500 > "$DIR.sfmock" &
SF_PID=$!
target/release/crm-mock pipedrive --port 0 --persons 3000 --organizations 400 --deals 600 --activities 500 \
    --users 8 --token "$PD_TOKEN" --shared-people 500 > "$DIR.pdmock" &
PD_PID=$!
cleanup() {
    if [ "$keep" != "--keep" ]; then
        kill "$MOCK_PID" "$SF_PID" "$PD_PID" 2>/dev/null || true
        bash scripts/pg.sh stop "$DIR"
    fi
}
trap cleanup EXIT
# The mocks seed their data before they listen: wait up to a minute each.
listening() {
    for _ in $(seq 1200); do grep -q listening "$1" 2>/dev/null && break; sleep 0.05; done
    grep -q listening "$1" || { echo "demo: the mock did not start within a minute; see $1" >&2; exit 1; }
    echo "http://$(sed -n 's/^listening on //p' "$1")"
}
MOCK_URL=$(listening "$DIR.mock")
SF_URL=$(listening "$DIR.sfmock")
PD_URL=$(listening "$DIR.pdmock")

PSQL=(psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -P pager=off)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE crm_demo"
run() { echo; echo "crm_demo=# $1"; "${PSQL[@]}" -d crm_demo -c "$1"; }

echo "== PostgreSQL 15 on 127.0.0.1:$PORT, HubSpot mock on $MOCK_URL, Salesforce mock on $SF_URL, Pipedrive mock on $PD_URL"
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
echo "== Pipedrive: no connector code; a spec (specs/pipedrive.json) the declarative rest connector runs"
run "SELECT name, jsonb_array_length(spec->'streams') AS streams, spec->>'base_url' AS base_url FROM crm_sync.builtin_specs"
run "SELECT crm_sync.create_source('pipedrive_demo', 'pipedrive', '{\"base_url\": \"$PD_URL\"}', '{\"api_token\": \"$PD_TOKEN\"}')"
run "SELECT stream, mode, status, records_upserted, records_deleted, api_calls, pg_size_pretty(bytes_received) AS received, duration, watermark FROM crm_sync.sync('pipedrive_demo')"
echo "-- Custom fields are keyed by 40-character hashes in Pipedrive; their columns are named after them"
run "SELECT property AS pipedrive_key, column_name FROM crm_sync.landing_columns WHERE source = 'pipedrive_demo' AND stream = 'persons' AND property ~ '^[0-9a-f]{40}\$' ORDER BY column_name"
run "SELECT id, first_name, last_name, emails->0->>'value' AS email, org_id, lead_score, source_channel, update_time FROM pipedrive_demo.persons ORDER BY id::int LIMIT 3"

echo
echo "== Meanwhile, in the CRM: 2 contacts edited, 1 created, 1 archived; 1 deal won"
curl -sf -X POST "$MOCK_URL/_mock/contacts/upsert" -H 'content-type: application/json' \
    -d '{"records":[{"id":"1","properties":{"firstname":"Ada","lifecyclestage":"customer"}},{"id":"2","properties":{"phone":"+44 20 7946 0000"}},{"properties":{"email":"grace@example.com","firstname":"Grace","lastname":"Hopper"}}]}' >/dev/null
curl -sf -X POST "$MOCK_URL/_mock/contacts/archive" -H 'content-type: application/json' -d '{"ids":["3"]}' >/dev/null
curl -sf -X POST "$MOCK_URL/_mock/deals/upsert" -H 'content-type: application/json' \
    -d '{"records":[{"id":"1","properties":{"dealstage":"closedwon","amount":"125000"}}]}' >/dev/null

run "SELECT stream, mode, status, records_read, records_upserted, records_unchanged, records_deleted, api_calls, duration, watermark FROM crm_sync.sync('hubspot_demo')"

echo
echo "== Meanwhile, in Salesforce: 2 accounts edited, 1 opportunity deleted"
ACC=$("${PSQL[@]}" -d crm_demo -At -c "SELECT string_agg(format('{\"Id\":\"%s\",\"Tier__c\":\"Platinum\"}', id), ',') FROM (SELECT id FROM sf_demo.account WHERE _deleted_at IS NULL ORDER BY id LIMIT 2) a")
OPP=$("${PSQL[@]}" -d crm_demo -At -c "SELECT id FROM sf_demo.opportunity WHERE _deleted_at IS NULL ORDER BY id LIMIT 1")
curl -sf -X POST "$SF_URL/_mock/sf/Account/upsert" -H 'content-type: application/json' -d "{\"records\":[$ACC]}" >/dev/null
curl -sf -X POST "$SF_URL/_mock/sf/Opportunity/delete" -H 'content-type: application/json' -d "{\"ids\":[\"$OPP\"]}" >/dev/null
run "SELECT stream, mode, status, records_read, records_upserted, records_unchanged, records_deleted, api_calls, duration, watermark FROM crm_sync.sync('sf_demo')"
run "SELECT id, email, firstname, lifecyclestage, phone, _deleted_at IS NOT NULL AS deleted, _run_id FROM hubspot_demo.contacts WHERE _run_id = (SELECT max(run_id) FROM crm_sync.runs WHERE source = 'hubspot_demo' AND stream = 'contacts') ORDER BY id::int"
run "SELECT run_id, stream, mode, status, records_read, records, records_unchanged, records_deleted, api_calls, finished_at - started_at AS took FROM crm_sync.runs ORDER BY run_id"

echo
echo "== In the background: queue a job, follow it, wait for it (a launcher worker runs it)"
curl -sf -X POST "$MOCK_URL/_mock/contacts/upsert" -H 'content-type: application/json' \
    -d '{"records":[{"id":"4","properties":{"lifecyclestage":"opportunity"}}]}' >/dev/null
JOB=$("${PSQL[@]}" -d crm_demo -At -c "SELECT crm_sync.sync_async('hubspot_demo')")
echo "crm_demo=# SELECT crm_sync.sync_async('hubspot_demo');  -- job $JOB"
run "SELECT crm_sync.wait($JOB, '60 seconds') AS status"
run "SELECT job_id, source, status, attempts, records, run_ids, finished_at - started_at AS took FROM crm_sync.jobs"

echo
echo "== On a schedule: the launcher queues a job now and every 15 minutes (pg_cron works too)"
run "SELECT crm_sync.schedule('sf_demo', '15 minutes')"
SJOB=
for _ in $(seq 300); do
    SJOB=$("${PSQL[@]}" -d crm_demo -At -c "SELECT last_job_id FROM crm_sync.schedules WHERE source = 'sf_demo'")
    [ -n "$SJOB" ] && break
    sleep 0.1
done
if [ -z "$SJOB" ]; then
    echo "demo: the launcher queued no job for the schedule within 30 s; see $DIR/server.log" >&2
    exit 1
fi
run "SELECT crm_sync.wait($SJOB, '120 seconds') AS status"

echo
echo "== The unified model: every sync merged what it landed into schema crm (cleaned, matched, with lineage)"
CRMS="(SELECT count(DISTINCT split_part(s, '/', 1)) FROM unnest(sources) s)"
run "SELECT (SELECT count(*) FROM crm.contacts) AS contacts, (SELECT count(*) FROM crm.contacts WHERE $CRMS = 3) AS contacts_in_all_3_crms, (SELECT count(*) FROM crm.contacts WHERE $CRMS = 2) AS in_2, (SELECT count(*) FROM crm.companies) AS companies, (SELECT count(*) FROM crm.companies WHERE $CRMS >= 2) AS companies_in_several, (SELECT count(*) FROM crm.deals) AS deals"

echo
echo "-- One person, as each CRM has them: typed differently (case, spaces, phone format, country)"
PERSON="(SELECT unified_id FROM crm.identities WHERE entity = 'contact' AND source = 'hubspot_demo' AND external_id = '12')"
run "SELECT i.source, i.external_id, coalesce(h._raw->'properties'->>'firstname', s._raw->>'FirstName', p._raw->>'first_name') AS first_name, coalesce(h._raw->'properties'->>'lastname', s._raw->>'LastName', p._raw->>'last_name') AS last_name, coalesce(h._raw->'properties'->>'email', s._raw->>'Email', p._raw->'emails'->0->>'value') AS email, coalesce(h._raw->'properties'->>'phone', s._raw->>'Phone', p._raw->'phones'->0->>'value') AS phone, coalesce(h._raw->'properties'->>'country', s._raw->>'MailingCountry') AS country FROM crm.identities i LEFT JOIN hubspot_demo.contacts h ON i.source = 'hubspot_demo' AND h.id = i.external_id LEFT JOIN sf_demo.contact s ON i.source = 'sf_demo' AND s.id = i.external_id LEFT JOIN pipedrive_demo.persons p ON i.source = 'pipedrive_demo' AND p.id = i.external_id WHERE i.entity = 'contact' AND i.unified_id = $PERSON ORDER BY i.source"
echo
echo "-- ... merged into one row of crm.contacts, cleaned"
run "SELECT p.id, p.first_name, p.last_name, p.email, p.phone, p.country, c.name AS company, p.sources FROM crm.contacts p LEFT JOIN crm.companies c ON c.id = p.company_id WHERE p.id = $PERSON"
echo
echo "-- ... and where each value came from"
run "SELECT field, source, external_id, source_updated_at FROM crm.field_lineage WHERE entity = 'contact' AND unified_id = $PERSON ORDER BY field"
echo
echo "-- Companies in several CRMs (HubSpot companies, Salesforce accounts, Pipedrive organizations), matched on their web domain or name"
run "SELECT c.id, c.name, c.domain, c.country, c.sources, (SELECT count(*) FROM crm.contacts p WHERE p.company_id = c.id) AS people FROM crm.companies c WHERE $CRMS >= 2 ORDER BY people DESC, c.id LIMIT 3"
echo
echo "-- Values that failed cleaning: kept in the landing tables, left out of the model"
run "SELECT source, stream, field, valid, invalid, invalid_samples[1:3] AS samples FROM crm_sync.quality WHERE invalid > 0 ORDER BY source, stream, field"

echo
echo "== crm_sync.status: every source and stream at a glance"
echo "(lag: now minus the watermark, the newest change known to have landed; the Salesforce mock's"
echo " seeded records were last changed in 2024, so streams nobody edited since show a lag of years)"
run "SELECT source, stream, state, last_status, last_records, lag, error_sqlstate, running_job, date_trunc('second', next_run_at - now()) AS next_run_in, schedule, landing_rows FROM crm_sync.status ORDER BY source, stream"
if [ "$keep" = "--keep" ]; then
    echo; echo "Still running: psql -h 127.0.0.1 -p $PORT -U postgres crm_demo   (mocks: $MOCK_URL pid $MOCK_PID, $SF_URL pid $SF_PID, $PD_URL pid $PD_PID)"
fi
