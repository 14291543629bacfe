// The Pipedrive mock read with Pipedrive's official Node client
// (`pipedrive` on npm): argv[2] the mock's URL, argv[3] the API token.
// Prints one JSON object with what the client made of each call; the
// pytest side (tests/e2e/test_pipedrive_client.py) checks it.
import {
  Configuration, PersonsApi, PersonFieldsApi, DealsApi, OrganizationsApi, ActivitiesApi,
  GetPersonFields200ResponseDataInnerFieldTypeConst,
} from 'pipedrive/v2';
import * as v1 from 'pipedrive/v1';

const [base, token] = process.argv.slice(2);
const cfg = new Configuration({ apiKey: token, basePath: `${base}/api/v2` });
const out = {};

// Persons: every page by cursor, sorted by update time, then a window.
const persons = new PersonsApi(cfg);
let cursor; const ids = []; let pages = 0;
do {
  const r = await persons.getPersons({ limit: 500, cursor, sort_by: 'update_time', sort_direction: 'asc' });
  if (!r.success) throw new Error('success false');
  ids.push(...r.data.map((p) => p.id));
  cursor = r.additional_data?.next_cursor ?? undefined;
  pages += 1;
} while (cursor && pages < 100);
out.persons = { count: ids.length, distinct: new Set(ids).size, pages };
const first = (await persons.getPersons({ limit: 1, ids: '7' })).data[0];
out.person7 = {
  id: first.id, first_name: first.first_name, emails: first.emails, is_deleted: first.is_deleted,
  update_time: first.update_time, custom_keys: Object.keys(first.custom_fields ?? {}),
};
const since = first.update_time;
const win = await persons.getPersons({ limit: 500, updated_since: since, updated_until: since });
out.empty_window = win.data.length;

// Field metadata: every type is one the client knows.
const fields = (await new PersonFieldsApi(cfg).getPersonFields({ limit: 500 })).data;
const known = new Set(Object.values(GetPersonFields200ResponseDataInnerFieldTypeConst));
out.fields = fields.map((f) => ({ code: f.field_code, name: f.field_name, type: f.field_type,
                                   custom: f.is_custom_field, known: known.has(f.field_type) }));

out.deals = (await new DealsApi(cfg).getDeals({ limit: 500 })).data.length;
out.deleted_deals = (await new DealsApi(cfg).getDeals({ limit: 500, status: 'deleted' })).data.length;
out.organizations = (await new OrganizationsApi(cfg).getOrganizations({ limit: 500 })).data.length;
out.activities = (await new ActivitiesApi(cfg).getActivities({ limit: 500 })).data.length;

// v1 users.
const v1cfg = new v1.Configuration({ apiKey: token, basePath: `${base}/v1` });
const users = await new v1.UsersApi(v1cfg).getUsers();
out.users = users.data.map((u) => ({ id: u.id, name: u.name, active_flag: u.active_flag, created: u.created }));

// A bad token: the client rejects with the error body.
try {
  await new PersonsApi(new Configuration({ apiKey: 'wrong', basePath: `${base}/api/v2` })).getPersons({});
  out.bad_token = 'accepted';
} catch (e) {
  out.bad_token = e?.response?.data ?? e?.error ?? e?.message ?? String(e);
}
// A limit over 500: a 400 in Pipedrive's shape.
try {
  await persons.getPersons({ limit: 501 });
  out.over_limit = 'accepted';
} catch (e) {
  out.over_limit = e?.response?.data ?? e?.error ?? e?.message ?? String(e);
}
console.log(JSON.stringify(out));
