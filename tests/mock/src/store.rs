//! One object type's records: seeded ones generated on demand, changed and
//! created ones kept, and an index ordered by modification time for search.

use std::collections::{BTreeSet, HashMap};

use crate::data::{fmt_ms, mix, parse_time, Kind, PropDef, Seeded};
use crate::people;

#[derive(Debug, Clone)]
struct Changed {
    props: HashMap<String, Option<String>>,
    created_ms: i64,
    updated_ms: i64,
}

#[derive(Debug)]
pub struct Store {
    pub gen: Seeded,
    pub props: Vec<PropDef>,
    next_id: u64,
    changed: HashMap<u64, Changed>,
    /// Archived ids and when they were archived.
    archived: std::collections::BTreeMap<u64, i64>,
    /// Ids gone without a trace: erased (GDPR) or purged after the restore
    /// window; in neither list, 404 on read.
    purged: std::collections::HashSet<u64>,
    /// Ids merged away and the record they went into.
    merged_into: HashMap<u64, u64>,
    /// Records search holds at a stale place: indexed (sorted and filtered)
    /// at their modification time, shown with this later one, as HubSpot's
    /// search returns a record changed after it was indexed.
    shown_ms: HashMap<u64, i64>,
    /// Live records as (modified ms, tie-break, id). Ties are ordered by a
    /// hash, not by id: HubSpot documents no order within equal sort keys.
    index: BTreeSet<(i64, u64, u64)>,
    /// Associations set through the admin API, replacing the seeded ones of
    /// that type: (id, to kind) -> associated ids, the first the primary.
    assoc: HashMap<(u64, Kind), Vec<u64>>,
    pub max_ts: i64,
    /// People shared with the other demo CRM (`crate::people`): the first
    /// ones of the contacts and companies are theirs.
    shared: u64,
}

/// A typed value for comparisons.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Key {
    Num(f64),
    Str(String),
}

fn tie(id: u64) -> u64 {
    mix(id ^ 0x7469_6521)
}

impl Store {
    pub fn new(kind: Kind, seed: u64, count: u64) -> Store {
        let gen = Seeded { kind, seed, count };
        let mut keys: Vec<(i64, u64, u64)> = (1..=count)
            .map(|id| (gen.updated_ms(id), tie(id), id))
            .collect();
        keys.sort_unstable();
        let max_ts = keys.last().map(|k| k.0).unwrap_or(crate::data::T0_MS);
        Store {
            gen,
            props: crate::data::builtin_props(kind),
            next_id: count + 1,
            changed: HashMap::new(),
            archived: Default::default(),
            purged: Default::default(),
            merged_into: HashMap::new(),
            shown_ms: HashMap::new(),
            index: keys.into_iter().collect(),
            assoc: HashMap::new(),
            max_ts,
            shared: 0,
        }
    }

    pub fn kind(&self) -> Kind {
        self.gen.kind
    }

    pub fn prop(&self, name: &str) -> Option<&PropDef> {
        self.props.iter().find(|p| p.name == name)
    }

    pub fn exists(&self, id: u64) -> bool {
        ((id >= 1 && id <= self.gen.count) || self.changed.contains_key(&id))
            && !self.purged.contains(&id)
    }

    pub fn is_archived(&self, id: u64) -> bool {
        self.archived.contains_key(&id)
    }

    pub fn live_count(&self) -> usize {
        self.index.len()
    }

    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    pub fn updated_ms(&self, id: u64) -> i64 {
        match self.changed.get(&id) {
            Some(c) => c.updated_ms,
            None => self.gen.updated_ms(id),
        }
    }

    pub fn created_ms(&self, id: u64) -> i64 {
        match self.changed.get(&id) {
            Some(c) => c.created_ms,
            None => self.gen.created_ms(id),
        }
    }

    /// Make the first seeded records those of `shared` people (contacts)
    /// or their companies, as `crate::people` writes them in HubSpot.
    pub fn with_shared_people(mut self, shared: u64) -> Self {
        self.shared = shared;
        self
    }

    /// A seeded record's value as the shared people decide it, if they do.
    fn shared_value(&self, id: u64, prop: &str) -> Option<Option<String>> {
        if self.shared == 0 || id > self.gen.count {
            return None;
        }
        match self.kind() {
            Kind::Contacts if id <= self.shared => people::hubspot_contact(id, self.shared, prop),
            Kind::Companies if id <= people::companies(self.shared) => {
                people::hubspot_company(id, prop)
            }
            _ => None,
        }
    }

    pub fn value(&self, id: u64, prop: &str) -> Option<String> {
        if prop == "hs_object_id" {
            return Some(id.to_string());
        }
        if prop == self.kind().modified_prop() {
            let ms = self
                .shown_ms
                .get(&id)
                .copied()
                .unwrap_or(self.updated_ms(id));
            return Some(fmt_ms(ms));
        }
        if prop == "createdate" {
            return Some(fmt_ms(self.created_ms(id)));
        }
        if let Some(c) = self.changed.get(&id) {
            if let Some(v) = c.props.get(prop) {
                return v.clone();
            }
            if id > self.gen.count {
                return None;
            }
        }
        if let Some(v) = self.shared_value(id, prop) {
            return v;
        }
        self.gen.value(id, prop)
    }

    /// The value of `prop` as its type compares: numbers and times as
    /// numbers, everything else as lower-cased text.
    pub fn key(&self, id: u64, prop: &str) -> Option<Key> {
        // Search compares the indexed time, whatever a result shows.
        if prop == self.kind().modified_prop() {
            return Some(Key::Num(self.updated_ms(id) as f64));
        }
        let v = self.value(id, prop)?;
        self.key_of(prop, &v)
    }

    /// Set a calculated property's value as HubSpot recomputes it: the
    /// record's modification time (and its place in search) stay.
    pub fn recompute(&mut self, id: u64, prop: &str, value: Option<String>) -> bool {
        if !self.exists(id) || self.is_archived(id) {
            return false;
        }
        let (created, updated) = (self.created_ms(id), self.updated_ms(id));
        self.changed
            .entry(id)
            .or_insert_with(|| Changed {
                props: HashMap::new(),
                created_ms: created,
                updated_ms: updated,
            })
            .props
            .insert(prop.to_owned(), value);
        true
    }

    /// Show record `id` with modification time `shown_ms` while search keeps
    /// it where it was indexed (see `shown_ms`); false when not live. Any
    /// change to the record ends it.
    pub fn show_stale(&mut self, id: u64, shown_ms: i64) -> bool {
        if !self.exists(id) || self.is_archived(id) {
            return false;
        }
        self.shown_ms.insert(id, shown_ms);
        true
    }

    pub fn key_of(&self, prop: &str, v: &str) -> Option<Key> {
        let kind = self.prop(prop).map(|p| p.kind.as_str()).unwrap_or("string");
        match kind {
            "number" => v.trim().parse::<f64>().ok().map(Key::Num),
            "datetime" | "date" => parse_time(v).map(|ms| Key::Num(ms as f64)),
            _ => Some(Key::Str(v.to_lowercase())),
        }
    }

    /// The modification time a change made now gets: never earlier than
    /// any existing one, so the newest change always sorts last.
    pub fn change_time(&self, requested: Option<i64>) -> i64 {
        requested.unwrap_or_else(|| chrono::Utc::now().timestamp_millis().max(self.max_ts))
    }

    /// Create (`id` None or unknown) or update a record; restores an
    /// archived one. Returns the id.
    pub fn upsert(
        &mut self,
        id: Option<u64>,
        props: Vec<(String, Option<String>)>,
        ts: i64,
    ) -> u64 {
        let id = id.unwrap_or(self.next_id);
        self.shown_ms.remove(&id);
        let existed = self.exists(id);
        if existed && !self.is_archived(id) {
            self.index.remove(&(self.updated_ms(id), tie(id), id));
        }
        self.archived.remove(&id);
        let created = if existed { self.created_ms(id) } else { ts };
        let entry = self.changed.entry(id).or_insert_with(|| Changed {
            props: HashMap::new(),
            created_ms: created,
            updated_ms: ts,
        });
        entry.updated_ms = ts;
        for (k, v) in props {
            if k == "hs_object_id" || k == "createdate" || k == self.gen.kind.modified_prop() {
                continue;
            }
            entry.props.insert(k, v);
        }
        self.index.insert((ts, tie(id), id));
        self.next_id = self.next_id.max(id + 1);
        self.max_ts = self.max_ts.max(ts);
        id
    }

    /// Record `id`'s associated records of kind `to`, the primary first:
    /// the ones set with [`Store::set_associations`], else the seeded one
    /// (seeded records only; `to_count` seeded records of kind `to`).
    pub fn associations(&self, id: u64, to: Kind, to_count: u64) -> Vec<u64> {
        if let Some(ids) = self.assoc.get(&(id, to)) {
            return ids.clone();
        }
        if self.kind() == Kind::Contacts && to == Kind::Companies && id <= self.shared {
            let c = people::person(id, self.shared).company;
            return (c <= to_count).then_some(c).into_iter().collect();
        }
        if id <= self.gen.count {
            return self.gen.associated(id, to, to_count).into_iter().collect();
        }
        Vec::new()
    }

    /// Replace record `id`'s associations of kind `to`.
    pub fn set_associations(&mut self, id: u64, to: Kind, ids: Vec<u64>) {
        self.assoc.insert((id, to), ids);
    }

    /// Archive a live record; false when there is none with this id.
    pub fn archive(&mut self, id: u64, ts: i64) -> bool {
        if !self.exists(id) || self.is_archived(id) {
            return false;
        }
        self.index.remove(&(self.updated_ms(id), tie(id), id));
        let created = self.created_ms(id);
        let entry = self.changed.entry(id).or_insert_with(|| Changed {
            props: HashMap::new(),
            created_ms: created,
            updated_ms: ts,
        });
        entry.updated_ms = ts;
        self.archived.insert(id, ts);
        self.max_ts = self.max_ts.max(ts);
        true
    }

    /// Remove a record without a trace (a GDPR erasure, or an archived
    /// record past HubSpot's 90-day restore window); false when there is
    /// none with this id.
    pub fn purge(&mut self, id: u64) -> bool {
        if !self.exists(id) {
            return false;
        }
        if !self.is_archived(id) {
            self.index.remove(&(self.updated_ms(id), tie(id), id));
        }
        self.archived.remove(&id);
        self.changed.remove(&id);
        self.assoc.retain(|(from, _), _| *from != id);
        self.purged.insert(id);
        true
    }

    /// Merge two live records as HubSpot now merges contacts and companies:
    /// a new record with a new id takes the primary's values (the
    /// secondary's where the primary has none), the earlier create date,
    /// and `hs_merged_object_ids` listing both old ids and those merged
    /// into them before; both old ids leave every list, and reading one
    /// gives the new record. None if either is not live or they are one.
    pub fn merge(&mut self, primary: u64, secondary: u64, ts: i64) -> Option<u64> {
        let live = |id: u64| self.exists(id) && !self.is_archived(id);
        if primary == secondary || !live(primary) || !live(secondary) {
            return None;
        }
        let skip = [
            "hs_object_id",
            "createdate",
            self.kind().modified_prop(),
            "hs_merged_object_ids",
        ];
        let props: Vec<(String, Option<String>)> = self
            .props
            .iter()
            .filter(|p| !skip.contains(&p.name.as_str()))
            .map(|p| {
                let v = self
                    .value(primary, &p.name)
                    .filter(|v| !v.is_empty())
                    .or_else(|| self.value(secondary, &p.name));
                (p.name.clone(), v)
            })
            .collect();
        let mut merged = vec![primary, secondary];
        for id in [primary, secondary] {
            if let Some(list) = self.value(id, "hs_merged_object_ids") {
                merged.extend(list.split(';').filter_map(|x| x.trim().parse::<u64>().ok()));
            }
        }
        merged.sort_unstable();
        merged.dedup();
        let created = self.created_ms(primary).min(self.created_ms(secondary));
        let list = merged
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(";");
        let mut props = props;
        props.push(("hs_merged_object_ids".into(), Some(list)));
        let new = self.upsert(None, props, ts);
        if let Some(c) = self.changed.get_mut(&new) {
            c.created_ms = created;
        }
        for old in [primary, secondary] {
            self.purge(old);
        }
        for (_, into) in self.merged_into.iter_mut() {
            if *into == primary || *into == secondary {
                *into = new;
            }
        }
        for old in merged {
            self.merged_into.insert(old, new);
        }
        Some(new)
    }

    /// The record a merged-away id went into.
    pub fn merged_into(&self, id: u64) -> Option<u64> {
        self.merged_into.get(&id).copied()
    }

    /// Up to `limit` ids from `from` on, live or archived ones.
    pub fn list_ids(&self, from: u64, limit: usize, archived: bool) -> Vec<u64> {
        if archived {
            return self
                .archived
                .range(from..)
                .take(limit)
                .map(|(id, _)| *id)
                .collect();
        }
        let mut out = Vec::with_capacity(limit);
        let mut id = from.max(1);
        while out.len() < limit && id < self.next_id {
            if self.exists(id) && !self.is_archived(id) {
                out.push(id);
            }
            id += 1;
        }
        out
    }

    /// Live ids whose modification time lies in `lo..=hi`, in index order.
    pub fn ids_modified_between(&self, lo: i64, hi: i64) -> Box<dyn Iterator<Item = u64> + '_> {
        if lo > hi {
            return Box::new(std::iter::empty());
        }
        Box::new(
            self.index
                .range((lo, 0, 0)..=(hi, u64::MAX, u64::MAX))
                .map(|k| k.2),
        )
    }

    /// Write one record as HubSpot's SimplePublicObject JSON.
    pub fn render(&self, out: &mut Vec<u8>, id: u64, props: &[&str]) {
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(id.to_string().as_bytes());
        out.extend_from_slice(b"\",\"properties\":{");
        for (i, p) in props.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, p);
            out.push(b':');
            match self.value(id, p) {
                Some(v) => json_str(out, &v),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b"},\"createdAt\":\"");
        out.extend_from_slice(fmt_ms(self.created_ms(id)).as_bytes());
        out.extend_from_slice(b"\",\"updatedAt\":\"");
        out.extend_from_slice(fmt_ms(self.updated_ms(id)).as_bytes());
        match self.archived.get(&id) {
            Some(at) => {
                out.extend_from_slice(b"\",\"archived\":true,\"archivedAt\":\"");
                out.extend_from_slice(fmt_ms(*at).as_bytes());
                out.extend_from_slice(b"\"}");
            }
            None => out.extend_from_slice(b"\",\"archived\":false}"),
        }
    }
}

/// Append `s` as a JSON string.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("write to a Vec");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(Kind::Contacts, 7, 1000)
    }

    #[test]
    fn upsert_moves_a_record_to_the_end_of_the_index() {
        let mut s = store();
        let ts = s.change_time(None);
        s.upsert(Some(5), vec![("firstname".into(), Some("Zed".into()))], ts);
        let last: Vec<u64> = s.ids_modified_between(ts, ts).collect();
        assert_eq!(last, vec![5]);
        assert_eq!(s.value(5, "firstname").as_deref(), Some("Zed"));
        // Untouched properties keep their seeded value.
        assert_eq!(s.value(5, "email"), s.gen.value(5, "email"));
        assert_eq!(s.live_count(), 1000);
    }

    #[test]
    fn created_records_get_the_next_id_and_only_their_values() {
        let mut s = store();
        let id = s.upsert(
            None,
            vec![("email".into(), Some("x@example.com".into()))],
            2_000_000_000_000,
        );
        assert_eq!(id, 1001);
        assert_eq!(s.value(id, "firstname"), None);
        assert_eq!(
            s.value(id, "lastmodifieddate").as_deref(),
            Some("2033-05-18T03:33:20.000Z")
        );
        assert_eq!(s.list_ids(1000, 10, false), vec![1000, 1001]);
    }

    #[test]
    fn archive_hides_and_upsert_restores() {
        let mut s = store();
        assert!(s.archive(3, 1_800_000_000_000));
        assert!(!s.archive(3, 1_800_000_000_000));
        assert_eq!(s.list_ids(1, 3, false), vec![1, 2, 4]);
        assert_eq!(s.list_ids(0, 10, true), vec![3]);
        assert_eq!(s.live_count(), 999);
        let mut out = Vec::new();
        s.render(&mut out, 3, &["email"]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["archived"], true);
        assert_eq!(v["archivedAt"], "2027-01-15T08:00:00.000Z");
        s.upsert(Some(3), vec![], 1_800_000_000_001);
        assert!(!s.is_archived(3));
        assert_eq!(s.live_count(), 1000);
    }

    #[test]
    fn rendered_records_are_json_with_nulls_and_escapes() {
        let mut s = store();
        s.upsert(
            Some(2),
            vec![
                ("lastname".into(), Some("O\"Neil\n".into())),
                ("phone".into(), None),
            ],
            1_700_000_000_000,
        );
        let mut out = Vec::new();
        s.render(&mut out, 2, &["lastname", "phone", "hs_object_id"]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "2");
        assert_eq!(v["properties"]["lastname"], "O\"Neil\n");
        assert!(v["properties"]["phone"].is_null());
        assert_eq!(v["properties"]["hs_object_id"], "2");
        assert_eq!(v["archived"], false);
    }

    #[test]
    fn associations_are_seeded_until_set() {
        let mut s = Store::new(Kind::Deals, 7, 100);
        let seeded = s.associations(3, Kind::Contacts, 1000);
        assert_eq!(seeded.len(), 1);
        s.upsert(Some(3), vec![("dealname".into(), Some("x".into()))], 1);
        assert_eq!(s.associations(3, Kind::Contacts, 1000), seeded);
        s.set_associations(3, Kind::Contacts, vec![9, 4]);
        assert_eq!(s.associations(3, Kind::Contacts, 1000), vec![9, 4]);
        let new = s.upsert(None, vec![], 2);
        assert!(s.associations(new, Kind::Contacts, 1000).is_empty());
        assert!(s.associations(new, Kind::Companies, 1000).is_empty());
    }

    #[test]
    fn keys_compare_by_type() {
        let s = store();
        assert_eq!(s.key_of("hs_object_id", "10"), Some(Key::Num(10.0)));
        assert!(s.key_of("hs_object_id", "9") < s.key_of("hs_object_id", "10"));
        assert_eq!(
            s.key_of("lastmodifieddate", "2023-01-01T00:00:00Z"),
            Some(Key::Num(1_672_531_200_000.0))
        );
        assert_eq!(s.key_of("email", "A@B"), Some(Key::Str("a@b".into())));
        assert_eq!(s.key_of("loyalty_score", "n/a"), None);
    }
}
