//! One Salesforce object's records. Seeded records are a pure function of
//! (seed, object, number, field) and cost nothing until changed. Changes
//! are kept as versions stamped with a change sequence number, so a query
//! can render records as they were when it started: memory grows with
//! changes, never with the seeded count.
//!
//! Seeded modification times come from a slot: record n sits in slot
//! `perm(n)` of a pseudo-random permutation, and times are non-decreasing
//! in the slot. A time range is a slot range, so no index over seeded
//! records is needed; changed records are indexed in a BTreeSet.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use super::schema::{Field, Object};
use crate::data::{mix, FIRST, LAST, SUFFIX, WORDS};
use crate::people;

/// 2023-01-01T00:00:00Z: seeded records were modified in 2023 and 2024 ...
pub const T0_MS: i64 = 1_672_531_200_000;
const SPAN_MS: i64 = 2 * 365 * 86_400_000;
/// ... and created from 2020-01-01 on, in id order.
const CREATED0_MS: i64 = 1_577_836_800_000;
const CREATED_SPAN_MS: i64 = 3 * 365 * 86_400_000;
/// The first slots share one instant, as after a bulk import.
pub const IMPORT_TIE: u64 = 450;
const IMPORT_MS: i64 = T0_MS + 3_600_000;
/// Seeded records share a timestamp with about this many others.
const PER_TIMESTAMP: u64 = 8;
/// One seeded record in this many is deleted (in the recycle bin).
const DELETED_ONE_IN: u64 = 200;

fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A bijection on `0..n`: a Feistel network over enough bits, walked until
/// it lands inside the domain.
#[derive(Debug, Clone, Copy)]
pub struct Perm {
    n: u64,
    half: u32,
    key: u64,
}

impl Perm {
    pub fn new(n: u64, key: u64) -> Perm {
        let bits = 64 - n.max(2).saturating_sub(1).leading_zeros();
        Perm {
            n,
            half: bits.div_ceil(2).max(1),
            key,
        }
    }

    fn round(&self, x: u64, i: u64) -> u64 {
        mix(x ^ self.key.rotate_left(i as u32 * 13) ^ i) & ((1 << self.half) - 1)
    }

    fn step(&self, x: u64, inverse: bool) -> u64 {
        let mask = (1u64 << self.half) - 1;
        let (mut l, mut r) = (x >> self.half, x & mask);
        if !inverse {
            for i in 0..4 {
                let t = l ^ self.round(r, i);
                l = r;
                r = t;
            }
        } else {
            for i in (0..4).rev() {
                let t = r ^ self.round(l, i);
                r = l;
                l = t;
            }
        }
        (l << self.half) | r
    }

    pub fn fwd(&self, x: u64) -> u64 {
        let mut y = self.step(x, false);
        while y >= self.n {
            y = self.step(y, false);
        }
        y
    }

    pub fn inv(&self, y: u64) -> u64 {
        let mut x = self.step(y, true);
        while x >= self.n {
            x = self.step(x, true);
        }
        x
    }
}

/// Salesforce's datetime rendering in REST results.
pub fn fmt_dt(ms: i64) -> String {
    let dt: DateTime<Utc> = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    dt.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Bulk API CSV renders datetimes with a `Z`.
pub fn fmt_dt_z(ms: i64) -> String {
    let dt: DateTime<Utc> = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub fn fmt_date(ms: i64) -> String {
    let dt: DateTime<Utc> = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    dt.format("%Y-%m-%d").to_string()
}

/// A datetime as Salesforce writes or accepts it (`…+0000`, `…Z`,
/// `…+00:00`, with or without milliseconds), or a date at midnight UTC.
pub fn parse_dt(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, f) {
            return Some(dt.timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

const B36: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The 18-character id of record `n`: key prefix, a pod part, ten base-36
/// digits (uppercase only, so byte order and case-insensitive order are
/// both creation order), then Salesforce's case-checksum suffix.
pub fn make_id(prefix: &str, n: u64) -> String {
    let mut digits = [b'0'; 10];
    let mut v = n;
    for d in digits.iter_mut().rev() {
        *d = B36[(v % 36) as usize];
        v /= 36;
    }
    let mut id = format!("{prefix}5G{}", std::str::from_utf8(&digits).unwrap_or("0"));
    id.truncate(15);
    let suffix = checksum(&id);
    id.push_str(&suffix);
    id
}

/// The three characters Salesforce appends to a 15-character id: per
/// block of five, a bit for each uppercase letter.
fn checksum(id15: &str) -> String {
    const MAP: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    id15.as_bytes()
        .chunks(5)
        .map(|c| {
            let bits = c
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_ascii_uppercase())
                .fold(0usize, |acc, (i, _)| acc | (1 << i));
            MAP[bits] as char
        })
        .collect()
}

/// Record number from an id of this prefix (15 or 18 characters).
pub fn parse_id(prefix: &str, id: &str) -> Option<u64> {
    if !(id.len() == 15 || id.len() == 18) || !id.starts_with(prefix) {
        return None;
    }
    let digits = id.get(5..15)?;
    digits.bytes().try_fold(0u64, |acc, b| {
        let d = B36.iter().position(|c| *c == b.to_ascii_uppercase())? as u64;
        acc.checked_mul(36)?.checked_add(d)
    })
}

/// A record's state after one change.
#[derive(Debug, Clone)]
pub struct Version {
    pub seq: u64,
    /// Field values set since seeding (all of them for created records).
    pub values: HashMap<String, Option<String>>,
    pub deleted: bool,
    pub created: i64,
    pub modified: i64,
    pub modstamp: i64,
}

#[derive(Debug)]
pub struct Table {
    pub obj: Object,
    seed: u64,
    salt: u64,
    /// Seeded records are 1..=count.
    pub count: u64,
    next: u64,
    perm: Perm,
    tie: u64,
    step: i64,
    versions: HashMap<u64, Vec<Version>>,
    /// Changed records by their current time-field value.
    index: BTreeSet<(i64, u64)>,
    /// Fields added at run time: null on existing records.
    added: Vec<String>,
    pub max_ts: i64,
    /// People shared with the other demo CRM (`crate::people`): the first
    /// contacts and accounts are theirs.
    shared: u64,
    /// Records physically deleted (hard-deleted, or purged from the recycle
    /// bin): in neither `query` nor `queryAll`.
    purged: HashSet<u64>,
    /// The delete log getDeleted reads: (deletion time, record).
    delete_log: Vec<(i64, u64)>,
    /// getDeleted's `earliestDateAvailable`: deletes before it may be
    /// missing from the log.
    pub earliest_deleted: i64,
    /// Formula values recomputed since seeding: no version, no new
    /// SystemModstamp, as Salesforce computes them when read.
    recalculated: HashMap<(u64, String), Option<String>>,
}

/// How a record looks at some point.
enum At<'a> {
    Seeded,
    Changed(&'a Version),
}

impl Table {
    pub fn new(obj: Object, seed: u64, count: u64) -> Table {
        let salt = name_hash(&obj.name);
        let history = obj.time_field() == "CreatedDate";
        let tie = IMPORT_TIE.min(count / 5);
        let slots = (count.saturating_sub(tie) / PER_TIMESTAMP).max(1);
        let step = (SPAN_MS - 86_400_000) / slots as i64;
        // History rows are written once, in id order: no shuffling.
        let perm = Perm::new(count.max(1), if history { 0 } else { mix(seed ^ salt) });
        let mut t = Table {
            obj,
            seed,
            salt,
            count,
            next: count + 1,
            perm,
            tie,
            step,
            versions: HashMap::new(),
            index: BTreeSet::new(),
            added: Vec::new(),
            max_ts: 0,
            shared: 0,
            purged: HashSet::new(),
            delete_log: Vec::new(),
            earliest_deleted: T0_MS,
            recalculated: HashMap::new(),
        };
        t.max_ts = if count > 0 {
            t.slot_ts(count - 1)
        } else {
            T0_MS
        };
        t
    }

    /// Make the first seeded Contacts and Accounts those of `shared`
    /// people and their companies, as `crate::people` writes them in
    /// Salesforce.
    pub fn with_shared_people(mut self, shared: u64) -> Self {
        self.shared = shared;
        self
    }

    /// A seeded record's value as the shared people decide it, if they do.
    fn shared_value(&self, n: u64, field: &str) -> Option<Option<String>> {
        if self.shared == 0 {
            return None;
        }
        match self.obj.name.as_str() {
            "Contact" if n <= self.shared => match field {
                "AccountId" => {
                    let c = people::person(n, self.shared).company;
                    Some(Some(make_id("001", c)))
                }
                _ => people::salesforce_contact(n, self.shared, field),
            },
            "Account" if n <= people::companies(self.shared) => {
                people::salesforce_account(n, field)
            }
            _ => None,
        }
    }

    fn history(&self) -> bool {
        self.obj.time_field() == "CreatedDate"
    }

    fn slot(&self, n: u64) -> u64 {
        if self.history() {
            n - 1
        } else {
            self.perm.fwd(n - 1)
        }
    }

    fn slot_record(&self, slot: u64) -> u64 {
        if self.history() {
            slot + 1
        } else {
            self.perm.inv(slot) + 1
        }
    }

    /// Time-field value of the seeded record in `slot`; non-decreasing.
    fn slot_ts(&self, slot: u64) -> i64 {
        if slot < self.tie {
            IMPORT_MS
        } else {
            T0_MS + 86_400_000 + ((slot - self.tie) / PER_TIMESTAMP) as i64 * self.step
        }
    }

    fn h(&self, n: u64, what: u64) -> u64 {
        mix(self.seed ^ self.salt.rotate_left(29) ^ mix(n ^ what.rotate_left(17)))
    }

    pub fn id(&self, n: u64) -> String {
        make_id(&self.obj.key_prefix, n)
    }

    pub fn parse_id(&self, id: &str) -> Option<u64> {
        parse_id(&self.obj.key_prefix, id).filter(|n| self.exists(*n, u64::MAX))
    }

    pub fn next_number(&self) -> u64 {
        self.next
    }

    fn at(&self, n: u64, seq: u64) -> Option<At<'_>> {
        if self.purged.contains(&n) {
            return None;
        }
        if let Some(vs) = self.versions.get(&n) {
            if let Some(v) = vs.iter().rev().find(|v| v.seq <= seq) {
                return Some(At::Changed(v));
            }
        }
        (n >= 1 && n <= self.count).then_some(At::Seeded)
    }

    pub fn exists(&self, n: u64, seq: u64) -> bool {
        self.at(n, seq).is_some()
    }

    pub fn is_changed(&self, n: u64) -> bool {
        self.versions.contains_key(&n)
    }

    pub fn deleted(&self, n: u64, seq: u64) -> bool {
        match self.at(n, seq) {
            Some(At::Changed(v)) => v.deleted,
            Some(At::Seeded) => self.seeded_deleted(n),
            None => false,
        }
    }

    fn seeded_deleted(&self, n: u64) -> bool {
        self.obj.has("IsDeleted") && self.h(n, 0xde1).is_multiple_of(DELETED_ONE_IN)
    }

    fn seeded_times(&self, n: u64) -> (i64, i64, i64) {
        let ts = self.slot_ts(self.slot(n));
        if self.history() {
            return (ts, ts, ts);
        }
        let created = CREATED0_MS
            + ((n - 1) as i128 * CREATED_SPAN_MS as i128 / self.count.max(1) as i128) as i64;
        // SystemModstamp moves on system changes too: a fifth of the
        // records were last touched by the system, after the user.
        let modified = if self.obj.has("SystemModstamp") && self.h(n, 0x5e).is_multiple_of(5) {
            ts - (self.h(n, 0x5f) % 3_600_000) as i64
        } else {
            ts
        };
        (created, modified, ts)
    }

    /// (CreatedDate, LastModifiedDate, SystemModstamp) in ms.
    pub fn times(&self, n: u64, seq: u64) -> (i64, i64, i64) {
        match self.at(n, seq) {
            Some(At::Changed(v)) => (v.created, v.modified, v.modstamp),
            _ => self.seeded_times(n),
        }
    }

    /// The time-field value now, which orders the index.
    fn time_value(&self, n: u64) -> i64 {
        let (c, m, s) = self.times(n, u64::MAX);
        match self.obj.time_field() {
            "SystemModstamp" => s,
            "LastModifiedDate" => m,
            _ => c,
        }
    }

    /// A field's value as text (datetimes in Salesforce's form, booleans
    /// `true`/`false`); None is null. Compound fields have no value of
    /// their own: see [`Table::compound`].
    pub fn value(&self, n: u64, field: &str, seq: u64) -> Option<String> {
        let at = self.at(n, seq)?;
        match field {
            "Id" => return Some(self.id(n)),
            "IsDeleted" => return Some(self.deleted(n, seq).to_string()),
            "CreatedDate" | "LastModifiedDate" | "SystemModstamp" => {
                let (c, m, s) = self.times(n, seq);
                let ms = match field {
                    "CreatedDate" => c,
                    "LastModifiedDate" => m,
                    _ => s,
                };
                return Some(fmt_dt(ms));
            }
            _ => {}
        }
        if let Some(x) = self.recalculated.get(&(n, field.to_owned())) {
            return x.clone();
        }
        if let At::Changed(v) = at {
            if let Some(x) = v.values.get(field) {
                return x.clone();
            }
            if n > self.count {
                // Created records: booleans default to false, the rest null.
                return match self.obj.field(field) {
                    Some(f) if f.ftype == "boolean" => Some("false".into()),
                    _ => None,
                };
            }
        }
        if self.added.iter().any(|a| a == field) {
            return match self.obj.field(field) {
                Some(f) if f.ftype == "boolean" => Some("false".into()),
                _ => None,
            };
        }
        self.seeded_value(n, field)
    }

    /// A compound field's components as (component name, value).
    pub fn compound(&self, n: u64, field: &Field, seq: u64) -> Vec<(String, Option<String>)> {
        self.obj
            .components(&field.name)
            .into_iter()
            .map(|c| (c.name.clone(), self.value(n, &c.name, seq)))
            .collect()
    }

    /// Live (or with `all`, also deleted) records whose time-field value is
    /// in `lo..=hi`, in time order; ties in slot order, not id order.
    pub fn by_time(&self, lo: i64, hi: i64, all: bool) -> Vec<u64> {
        if lo > hi {
            return Vec::new();
        }
        let first = partition(self.count, |s| self.slot_ts(s) < lo);
        let end = partition(self.count, |s| self.slot_ts(s) <= hi);
        let mut seeded = (first..end)
            .map(|s| (self.slot_ts(s), self.slot_record(s)))
            .filter(|(_, n)| !self.is_changed(*n))
            .peekable();
        let mut changed = self
            .index
            .range((lo, 0)..=(hi, u64::MAX))
            .copied()
            .peekable();
        let mut out = Vec::new();
        loop {
            let take_seeded = match (seeded.peek(), changed.peek()) {
                (Some(a), Some(b)) => a.0 <= b.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let (_, n) = if take_seeded {
                seeded.next()
            } else {
                changed.next()
            }
            .expect("peeked");
            if self.purged.contains(&n) {
                continue;
            }
            if all || !self.deleted(n, u64::MAX) {
                out.push(n);
            }
        }
        out
    }

    /// Every record now, in id order.
    pub fn all_ids(&self, all: bool) -> Vec<u64> {
        (1..self.next)
            .filter(|n| self.exists(*n, u64::MAX) && (all || !self.deleted(*n, u64::MAX)))
            .collect()
    }

    /// Archived (`IsArchived`), which `query` leaves out.
    pub fn archived(&self, n: u64) -> bool {
        self.obj.has("IsArchived")
            && self.value(n, "IsArchived", u64::MAX).as_deref() == Some("true")
    }

    /// The time a change made now gets: never before an existing one.
    pub fn change_time(&self, requested: Option<i64>) -> i64 {
        requested.unwrap_or_else(|| chrono::Utc::now().timestamp_millis().max(self.max_ts))
    }

    fn push(&mut self, n: u64, v: Version) {
        if self.is_changed(n) {
            let old = self.time_value(n);
            self.index.remove(&(old, n));
        }
        self.max_ts = self.max_ts.max(v.modstamp);
        self.versions.entry(n).or_default().push(v);
        let now = self.time_value(n);
        self.index.insert((now, n));
    }

    fn current(&self, n: u64) -> Version {
        let (created, modified, modstamp) = self.times(n, u64::MAX);
        match self.at(n, u64::MAX) {
            Some(At::Changed(v)) => v.clone(),
            _ => Version {
                seq: 0,
                values: HashMap::new(),
                deleted: self.seeded_deleted(n),
                created,
                modified,
                modstamp,
            },
        }
    }

    /// Create (`n` None) or update a record. Returns its number.
    pub fn upsert(
        &mut self,
        n: Option<u64>,
        values: Vec<(String, Option<String>)>,
        ts: i64,
        seq: u64,
    ) -> u64 {
        let n = n.unwrap_or(self.next);
        let mut v = if self.exists(n, u64::MAX) {
            self.current(n)
        } else {
            Version {
                seq,
                values: HashMap::new(),
                deleted: false,
                created: ts,
                modified: ts,
                modstamp: ts,
            }
        };
        v.seq = seq;
        v.modified = ts;
        v.modstamp = ts;
        for (k, val) in values {
            v.values.insert(k, val);
        }
        self.push(n, v);
        self.next = self.next.max(n + 1);
        n
    }

    /// Move a record to (or, `deleted` false, out of) the recycle bin.
    pub fn set_deleted(&mut self, n: u64, deleted: bool, ts: i64, seq: u64) -> bool {
        if !self.exists(n, u64::MAX) || self.deleted(n, u64::MAX) == deleted {
            return false;
        }
        let mut v = self.current(n);
        v.seq = seq;
        v.deleted = deleted;
        v.modstamp = ts;
        if !deleted {
            v.modified = ts;
        } else {
            self.delete_log.push((ts, n));
        }
        self.push(n, v);
        true
    }

    /// Delete physically: a hard delete (`live`, logged now) or a record
    /// purged from the recycle bin (already logged). Either way it leaves
    /// `query` and `queryAll`.
    pub fn purge(&mut self, n: u64, ts: i64) -> bool {
        if !self.exists(n, u64::MAX) {
            return false;
        }
        if !self.deleted(n, u64::MAX) {
            self.delete_log.push((ts, n));
        }
        if self.is_changed(n) {
            let t = self.time_value(n);
            self.index.remove(&(t, n));
        }
        self.purged.insert(n);
        true
    }

    /// The log loses every entry before `before`, which becomes
    /// `earliestDateAvailable`.
    pub fn expire_delete_log(&mut self, before: i64) {
        self.delete_log.retain(|(t, _)| *t >= before);
        self.earliest_deleted = self.earliest_deleted.max(before);
    }

    /// getDeleted: (id, deletion time) of the log's entries in `lo..=hi`.
    pub fn deleted_between(&self, lo: i64, hi: i64) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .delete_log
            .iter()
            .filter(|(t, _)| *t >= lo && *t <= hi)
            .map(|(t, n)| (self.id(*n), *t))
            .collect();
        out.sort();
        out
    }

    pub fn add_field(&mut self, f: Field) -> Result<(), String> {
        if self.obj.field(&f.name).is_some() {
            return Err(format!("field {} exists", f.name));
        }
        self.added.push(f.name.clone());
        self.obj.fields.push(f);
        Ok(())
    }

    /// A formula's value changes (its inputs did: another record, the
    /// date): SystemModstamp stays.
    pub fn recalculate(
        &mut self,
        n: u64,
        field: &str,
        value: Option<String>,
    ) -> Result<(), String> {
        let f = self
            .obj
            .field(field)
            .ok_or_else(|| format!("no field {field}"))?;
        if f.formula.is_none() {
            return Err(format!("{field} is not a formula field"));
        }
        let name = f.name.clone();
        self.recalculated.insert((n, name), value);
        Ok(())
    }

    /// Make a field filterable and sortable, or neither.
    pub fn set_filterable(&mut self, name: &str, yes: bool) -> Result<(), String> {
        let f = self
            .obj
            .fields
            .iter_mut()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("no field {name}"))?;
        f.no_filter = !yes;
        Ok(())
    }

    pub fn remove_field(&mut self, name: &str) -> Result<(), String> {
        let f = self
            .obj
            .field(name)
            .ok_or_else(|| format!("no field {name}"))?;
        if !f.custom {
            return Err(format!("{name} is a standard field"));
        }
        let name = f.name.clone();
        self.obj
            .fields
            .retain(|x| x.name != name && x.compound.as_deref() != Some(&name));
        Ok(())
    }

    pub fn live_count(&self) -> usize {
        (1..self.next)
            .filter(|n| self.exists(*n, u64::MAX) && !self.deleted(*n, u64::MAX))
            .count()
    }

    /// The seeded value of a field (None: null).
    fn seeded_value(&self, n: u64, field: &str) -> Option<String> {
        let f = self.obj.field(field)?;
        if let Some(v) = self.shared_value(n, field) {
            return v;
        }
        let h = self.h(n, name_hash(field));
        let sometimes = |pct: u64| h % 100 < pct;
        let first = FIRST[(self.h(n, 10) % FIRST.len() as u64) as usize];
        let last = LAST[(self.h(n, 11) % LAST.len() as u64) as usize];
        let company = |k: u64| {
            let c = mix(self.seed ^ k);
            format!(
                "{} {}",
                WORDS[(c % WORDS.len() as u64) as usize],
                SUFFIX[((c >> 20) % SUFFIX.len() as u64) as usize]
            )
        };
        let city = CITIES[(self.h(n, 12) % CITIES.len() as u64) as usize];
        let user = |k: u64| make_id("005", k % 20 + 1);
        let obj = self.obj.name.as_str();
        let named = match (obj, field) {
            ("Account", "Name") => Some(format!("{} {n}", company(n))),
            // Each account its own site (or none), as in a real org.
            ("Account", "Website") if sometimes(85) => Some(format!(
                "https://www.{}-{n}.example.com",
                ascii(company(n).split(' ').next().unwrap_or("Acme"))
            )),
            (_, "FirstName") => Some(first.to_owned()),
            (_, "LastName") => Some(last.to_owned()),
            ("User", "Name") | ("Contact", "Name") | ("Lead", "Name") => {
                Some(format!("{first} {last}"))
            }
            ("User", "Username") => Some(format!(
                "{}.{}{n}@mock.example.com",
                ascii(first),
                ascii(last)
            )),
            (_, "Email") if obj == "User" || sometimes(85) => Some(format!(
                "{}.{}{n}@{}.example.com",
                ascii(first),
                ascii(last),
                ascii(&company(n / 3)).split(' ').next().unwrap_or("acme")
            )),
            (_, "Email") => None,
            ("Lead", "Company") => Some(company(n)),
            ("Opportunity", "Name") => {
                Some(format!("{} renewal {}", company(h % 97), 2023 + h % 3))
            }
            ("Invoice__c", "Name") => Some(format!("INV-{n:07}")),
            ("Wide__c", "Name") => Some(format!("Wide {n}")),
            (_, "AccountId") | (_, "Account__c") | (_, "ParentId") => {
                let pct = if field == "ParentId" { 10 } else { 90 };
                sometimes(pct).then(|| make_id("001", h % 1000 + 1))
            }
            ("Opportunity", "ContactId") => {
                sometimes(60).then(|| make_id("003", (h >> 12) % 1000 + 1))
            }
            (_, "OwnerId") | (_, "CreatedById") | (_, "LastModifiedById") | (_, "UserId") => {
                Some(user(h))
            }
            (_, "Description") if sometimes(30) => Some(format!(
                "Line one for {n}, with \"quotes\".\nLine two; commas, too."
            )),
            (_, "Description") => None,
            (_, "Loyalty_Score__c") if sometimes(90) => {
                Some(format!("{}.{:02}", h % 1000, (h >> 10) % 100))
            }
            (_, "Loyalty_Score__c") => None,
            (_, "Signup_Date__c") if sometimes(85) => Some(fmt_date(
                self.times(n, u64::MAX).0 + 86_400_000 * (h % 90) as i64,
            )),
            (_, "Is_VIP__c") => Some(h.is_multiple_of(10).to_string()),
            ("Opportunity", "Probability") => Some(format!("{}", (h % 11) * 10)),
            ("Opportunity", "IsClosed") => Some((h % 7 >= 5).to_string()),
            ("User", "IsActive") => Some((!h.is_multiple_of(10)).to_string()),
            ("AccountHistory", "OldValue") | ("AccountHistory", "NewValue") => {
                sometimes(80).then(|| pick(TIERS_OR_NAMES, h).to_owned())
            }
            _ => None,
        };
        if named.is_some() || is_special(obj, field) || matches!(field, "Email" | "Description") {
            return named;
        }
        // Components of an address or location: one city for the record.
        if f.compound
            .as_deref()
            .and_then(|c| self.obj.field(c))
            .is_some_and(Field::is_compound)
        {
            if !self.h(n, 0xadd).is_multiple_of(7) {
                let lat = city.3 + ((h % 1000) as f64 - 500.0) / 10_000.0;
                let lon = city.4 + (((h >> 12) % 1000) as f64 - 500.0) / 10_000.0;
                return Some(match () {
                    _ if field.ends_with("Street") => format!("{} Main Street", h % 999 + 1),
                    _ if field.ends_with("City") => city.0.to_owned(),
                    _ if field.ends_with("State") => city.1.to_owned(),
                    _ if field.ends_with("PostalCode") => format!("{:05}", h % 100_000),
                    _ if field.ends_with("Country") => city.2.to_owned(),
                    _ if field.contains("Latitude") => format!("{lat:.6}"),
                    _ if field.contains("Longitude") => format!("{lon:.6}"),
                    _ => "Address".to_owned(),
                });
            }
            return None;
        }
        if f.nillable && !f.name_field && h % 100 >= 88 {
            return None;
        }
        let h2 = h >> 8;
        Some(match f.ftype.as_str() {
            "string" | "textarea" => format!("{} {}", f.label, h2 % 10_000),
            "picklist" if !f.picklist.is_empty() => pick_s(&f.picklist, h2).to_owned(),
            "multipicklist" if !f.picklist.is_empty() => {
                let a = pick_s(&f.picklist, h2);
                let b = pick_s(&f.picklist, h2 >> 9);
                if a == b {
                    a.to_owned()
                } else {
                    format!("{a};{b}")
                }
            }
            "email" => format!("billing{n}@{}.example.com", h2 % 500),
            // As people type them in Salesforce: no country code.
            "phone" => format!(
                "({}) {:03}-{:04}",
                ["415", "212", "646", "312", "617"][(h2 % 5) as usize],
                200 + (h2 >> 4) % 800,
                (h2 >> 10) % 10_000
            ),
            "url" => format!("https://www.example{}.com", h2 % 1000),
            "boolean" => h2.is_multiple_of(3).to_string(),
            "int" => format!("{}", 1 + h2 % 5000),
            "double" if f.scale == 0 => format!("{}", h2 % 100),
            "double" => format!("{}.{:02}", h2 % 100_000, (h2 >> 20) % 100),
            "currency" if f.scale == 0 => format!("{}", (h2 % 50_000) * 1000),
            "currency" => format!("{}.{:02}", h2 % 250_000, (h2 >> 20) % 100),
            "percent" => format!("{}.{:02}", h2 % 30, (h2 >> 20) % 100),
            "date" => fmt_date(self.times(n, u64::MAX).2 + 86_400_000 * (h2 % 400) as i64),
            "datetime" => fmt_dt(self.times(n, u64::MAX).2 - (h2 % 86_400_000) as i64),
            "time" => format!("{:02}:{:02}:00.000Z", h2 % 24, (h2 >> 5) % 4 * 15),
            // REST answers a blob with where to fetch it.
            "base64" => format!(
                "/services/data/v59.0/sobjects/{obj}/{}/{}",
                self.id(n),
                f.name
            ),
            _ => return None,
        })
    }
}

/// Fields whose seeded value is decided by name alone (null when unnamed).
fn is_special(obj: &str, field: &str) -> bool {
    matches!(
        field,
        "FirstName"
            | "LastName"
            | "AccountId"
            | "ContactId"
            | "Account__c"
            | "ParentId"
            | "OwnerId"
            | "CreatedById"
            | "LastModifiedById"
            | "UserId"
            | "Loyalty_Score__c"
            | "Signup_Date__c"
            | "Is_VIP__c"
    ) || (obj == "AccountHistory" && matches!(field, "OldValue" | "NewValue"))
        || (field == "Name" && obj != "Invoice__c")
        || (obj == "User" && field == "Username")
        || (obj == "Account" && field == "Website")
}

/// The first index in `0..n` where `pred` turns false (pred is monotone).
fn partition(n: u64, pred: impl Fn(u64) -> bool) -> u64 {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

fn ascii(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

fn pick<'a>(list: &[&'a str], h: u64) -> &'a str {
    list[(h % list.len() as u64) as usize]
}

fn pick_s(list: &[String], h: u64) -> &str {
    &list[(h % list.len() as u64) as usize]
}

const TIERS_OR_NAMES: &[&str] = &[
    "Bronze",
    "Silver",
    "Gold",
    "Platinum",
    "Acme Inc",
    "Globex GmbH",
];
/// City, state, country, latitude, longitude.
const CITIES: &[(&str, &str, &str, f64, f64)] = &[
    ("San Francisco", "CA", "United States", 37.7749, -122.4194),
    ("Austin", "TX", "United States", 30.2672, -97.7431),
    ("Dublin", "Leinster", "Ireland", 53.3498, -6.2603),
    ("Berlin", "Berlin", "Germany", 52.52, 13.405),
    ("Paris", "Île-de-France", "France", 48.8566, 2.3522),
    ("Toronto", "ON", "Canada", 43.6532, -79.3832),
    ("Sydney", "NSW", "Australia", -33.8688, 151.2093),
    ("São Paulo", "SP", "Brazil", -23.5505, -46.6333),
];

#[cfg(test)]
mod tests {
    use super::super::schema;
    use super::*;

    fn table(name: &str, count: u64) -> Table {
        let obj = schema::objects()
            .into_iter()
            .find(|o| o.name == name)
            .unwrap();
        Table::new(obj, 42, count)
    }

    #[test]
    fn permutation_is_a_bijection() {
        for n in [1u64, 2, 3, 50, 1000, 4097] {
            let p = Perm::new(n, 99);
            let mut seen = vec![false; n as usize];
            for x in 0..n {
                let y = p.fwd(x);
                assert!(y < n);
                assert!(!seen[y as usize]);
                seen[y as usize] = true;
                assert_eq!(p.inv(y), x);
            }
        }
    }

    #[test]
    fn ids_sort_in_creation_order_both_ways_and_round_trip() {
        let ids: Vec<String> = (1..5000u64).step_by(7).map(|n| make_id("001", n)).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].to_lowercase() < w[1].to_lowercase());
        }
        assert_eq!(ids[0].len(), 18);
        assert_eq!(parse_id("001", &ids[3]), Some(22));
        assert_eq!(parse_id("001", &ids[3][..15]), Some(22));
        assert_eq!(parse_id("003", &ids[3]), None);
        // Salesforce's own suffix for a known id.
        assert_eq!(checksum("001Da00000xnAk6"), "IAE");
    }

    #[test]
    fn time_ranges_come_from_slots_and_changes() {
        let mut t = table("Account", 10_000);
        let all = t.by_time(i64::MIN, i64::MAX, true);
        assert_eq!(all.len(), 10_000);
        let ts: Vec<i64> = all.iter().map(|n| t.times(*n, u64::MAX).2).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            ts.iter().filter(|x| **x == IMPORT_MS).count(),
            IMPORT_TIE as usize
        );
        let ts_now = t.change_time(None);
        t.upsert(
            Some(5),
            vec![("Name".into(), Some("Zed".into()))],
            ts_now,
            1,
        );
        assert_eq!(t.by_time(ts_now, ts_now, false), vec![5]);
        assert_eq!(
            t.value(5, "Name", 0).as_deref(),
            t.seeded_value(5, "Name").as_deref()
        );
        assert_eq!(t.value(5, "Name", 1).as_deref(), Some("Zed"));
        assert_eq!(t.by_time(i64::MIN, i64::MAX, true).len(), 10_000);
    }

    #[test]
    fn deletes_are_versions_too() {
        let mut t = table("Contact", 100);
        let n = (1..=100).find(|n| !t.deleted(*n, 0)).unwrap();
        assert!(t.set_deleted(n, true, 1_800_000_000_000, 3));
        assert!(t.deleted(n, 3));
        assert!(!t.deleted(n, 2));
        assert_eq!(
            t.value(n, "SystemModstamp", 3).as_deref(),
            Some("2027-01-15T08:00:00.000+0000")
        );
        assert!(!t.by_time(i64::MIN, i64::MAX, false).contains(&n));
        assert!(t.by_time(i64::MIN, i64::MAX, true).contains(&n));
        assert!(t.set_deleted(n, false, 1_800_000_000_001, 4));
        assert!(t.by_time(i64::MIN, i64::MAX, false).contains(&n));
    }

    #[test]
    fn values_have_their_types_and_some_nulls() {
        let t = table("Account", 2000);
        let mut nulls = 0;
        for n in 1..=2000 {
            let v = t.value(n, "AnnualRevenue", u64::MAX);
            match v {
                None => nulls += 1,
                Some(s) => assert!(s.parse::<f64>().is_ok(), "{s}"),
            }
            assert!(parse_dt(&t.value(n, "SystemModstamp", u64::MAX).unwrap()).is_some());
            let (c, m, s) = t.times(n, u64::MAX);
            assert!(c <= m && m <= s);
        }
        assert!(nulls > 100, "{nulls}");
        assert!(
            t.value(1, "Tier__c", u64::MAX).is_none()
                || schema::TIERS.contains(&t.value(1, "Tier__c", u64::MAX).unwrap().as_str())
        );
    }

    #[test]
    fn a_million_records_start_at_once() {
        let start = std::time::Instant::now();
        let t = table("Account", 1_000_000);
        assert!(start.elapsed().as_millis() < 50);
        assert_eq!(
            t.by_time(IMPORT_MS, IMPORT_MS, true).len(),
            IMPORT_TIE as usize
        );
    }
}
