// The Dataverse mock read with Microsoft's recommended Node client for the
// Web API, dynamics-web-api (tests/e2e/test_dynamics_client.py): a tracked
// full read over several pages, its delta link with a change and a delete,
// formatted values, metadata, and error bodies.
// Usage: node check_dynamics.mjs <mock url> <tenant> <client id> <secret> <id of contact 2> <id of contact 3>
import { DynamicsWebApi } from "dynamics-web-api";

const [url, tenant, clientId, secret, changeId, deleteId] = process.argv.slice(2);

async function token() {
  const r = await fetch(`${url}/${tenant}/oauth2/v2.0/token`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "client_credentials", client_id: clientId,
                                client_secret: secret, scope: `${url}/.default` }),
  });
  const t = await r.json();
  return t.access_token;
}

const accessToken = await token();
const api = new DynamicsWebApi({ serverUrl: url, dataApi: { version: "9.2" },
                                 onTokenRefresh: async () => accessToken });
const admin = (path, body) =>
  fetch(url + path, { method: "POST", body: JSON.stringify(body) }).then((r) => r.json());

const out = {};
const full = await api.retrieveAll({
  collection: "contacts",
  select: ["fullname", "modifiedon", "_parentcustomerid_value", "statecode"],
  trackChanges: true,
  maxPageSize: 40,
  includeAnnotations: "OData.Community.Display.V1.FormattedValue",
});
out.full = { count: full.value.length, distinct: new Set(full.value.map((r) => r.contactid)).size,
             delta: typeof full.oDataDeltaLink === "string" };
const first = full.value[0];
out.first = { state: first.statecode, state_label: first.statecode_Formatted ?? null,
              parent: first._parentcustomerid_value, modified_type: typeof first.modifiedon };

await admin("/_mock/dv/upsert", { entity: "contact", id: changeId, record: { fullname: "Changed Person" } });
await admin("/_mock/dv/delete", { entity: "contact", id: deleteId });
const delta = await api.retrieveMultiple({ collection: "contacts", maxPageSize: 40 }, full.oDataDeltaLink);
out.delta = delta.value.map((r) =>
  typeof r["@odata.context"] === "string" && r["@odata.context"].endsWith("$deletedEntity")
    ? { deleted: r.id, reason: r.reason }
    : { changed: r.contactid, fullname: r.fullname });
out.next_delta = typeof delta.oDataDeltaLink === "string";

const defs = await api.retrieveMultiple({ collection: "EntityDefinitions",
                                          select: ["LogicalName", "EntitySetName", "ChangeTrackingEnabled"] });
out.tables = defs.value.map((d) => [d.LogicalName, d.EntitySetName, d.ChangeTrackingEnabled]);

try {
  await api.retrieveMultiple({ collection: "contacts", select: ["nosuchcolumn"] });
  out.bad_column = null;
} catch (e) {
  out.bad_column = { status: e.status, code: e.code, message: e.message };
}
await admin("/_mock/dv/limits", { requests: 0, window_s: 300 });
try {
  await api.retrieveMultiple({ collection: "accounts", select: ["name"] });
  out.throttled = null;
} catch (e) {
  out.throttled = { status: e.status, code: e.code, retry_after: e.headers?.["retry-after"] ?? null };
}
console.log(JSON.stringify(out));
