// The Zoho mock read with Zoho's official Node SDK for API v8
// (@zohocrm/nodejs-sdk-8.0 2.0.0; tests/e2e/test_zoho_client.py): its
// token refresh against the mock's accounts server, field metadata, Get
// Records over page tokens, and error bodies.
// Usage: node check_zoho.mjs <mock url> <client id> <client secret> <refresh token>
import * as Z from "@zohocrm/nodejs-sdk-8.0";
import { mkdtempSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";

const [base, clientId, secret, refresh] = process.argv.slice(2);

class MemStore extends Z.TokenStore.TokenStore {
  tokens = new Map();
  async findToken(t) { return this.tokens.get("t") ?? null; }
  async findTokenById(id) { return this.tokens.get("t") ?? null; }
  async saveToken(t) { this.tokens.set("t", t); }
  async deleteToken(id) { this.tokens.delete("t"); }
  async getTokens() { return [...this.tokens.values()]; }
  async deleteTokens() { this.tokens.clear(); }
}

const env = new Z.Environment(base, `${base}/oauth/v2/token`, base);
const token = new Z.OAuthBuilder().clientId(clientId).clientSecret(secret).refreshToken(refresh).findUser(false).build();
await (await new Z.InitializeBuilder())
  .environment(env).token(token).store(new MemStore())
  .SDKConfig(new Z.SDKConfigBuilder().pickListValidation(false).autoRefreshFields(false).updateAPIDomain(false).build())
  .resourcePath(mkdtempSync(join(tmpdir(), "zsdk-")))
  .logger(new Z.LogBuilder().level(Z.Levels.OFF).build())
  .initialize();

const out = { pages: 0, ids: [], first: null };
let pageToken = null;
do {
  const p = new Z.ParameterMap();
  await p.add(Z.Record.GetRecordsParam.FIELDS, "Last_Name,Email,Modified_Time,Account_Name,Owner,Languages");
  await p.add(Z.Record.GetRecordsParam.PER_PAGE, 200);
  await p.add(Z.Record.GetRecordsParam.SORT_BY, "id");
  await p.add(Z.Record.GetRecordsParam.SORT_ORDER, "asc");
  if (pageToken) await p.add(Z.Record.GetRecordsParam.PAGE_TOKEN, pageToken);
  const res = await new Z.Record.RecordOperations("Contacts").getRecords(p);
  if ([204, 304].includes(res.getStatusCode())) break;
  const obj = res.getObject();
  if (obj instanceof Z.Record.APIException) throw new Error(obj.getCode().getValue() + " " + obj.getMessage().getValue());
  out.pages += 1;
  for (const r of obj.getData()) {
    out.ids.push(r.getId().toString());
    if (!out.first) {
      const acct = r.getKeyValue("Account_Name");
      out.first = {
        id: r.getId().toString(),
        last_name: r.getKeyValue("Last_Name"),
        modified: r.getModifiedTime()?.toISOString?.() ?? String(r.getModifiedTime()),
        account_id: acct?.getId?.()?.toString?.() ?? null,
        languages: r.getKeyValue("Languages"),
      };
    }
  }
  const info = obj.getInfo();
  pageToken = info.getMoreRecords() ? info.getNextPageToken() : null;
} while (pageToken);

// More than 50 fields: the API's error through the SDK.
const p = new Z.ParameterMap();
await p.add(Z.Record.GetRecordsParam.FIELDS, Array.from({ length: 45 }, (_, i) => `Custom_Score_${i + 1}`).concat(["Last_Name", "Email", "Phone", "Title", "Mobile", "Full_Name"]).join(","));
const res = await new Z.Record.RecordOperations("Contacts").getRecords(p);
const obj = res.getObject();
out.too_many = obj instanceof Z.Record.APIException ? { status: res.getStatusCode(), code: obj.getCode().getValue(), message: obj.getMessage().getValue() } : null;
out.count = out.ids.length;
out.distinct = new Set(out.ids).size;
delete out.ids;
console.log(JSON.stringify(out));
