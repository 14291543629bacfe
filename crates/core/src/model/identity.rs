//! Identity resolution: which source records are the same person, company
//! or deal. Plain Rust; the extension loads records with their match keys,
//! calls [`resolve`], and writes the unified ids back.
//!
//! Records are linked when an enabled rule's keys are all present and equal
//! (union-find over the key values). Each group of linked records is one
//! unified row. Its id is the id of the group's earliest-seen record (ties by
//! the record's own id), so an id stays put when records join later, and
//! the same records give the same ids whatever order they arrive in.

use std::collections::HashMap;

/// A record as identity resolution sees it.
#[derive(Debug, Clone)]
pub struct Member {
    /// The record's own stable id ([`record_id`]).
    pub id: i64,
    /// When the model first saw the record (epoch microseconds).
    pub first_seen: i64,
    /// For each rule, the record's key for it: `None` when any of the
    /// rule's keys is missing (the rule cannot link it).
    pub keys: Vec<Option<String>>,
}

/// A stable 63-bit id for one source record: FNV-1a over
/// `entity/source/stream/external_id`, kept positive.
pub fn record_id(entity: &str, source: &str, stream: &str, external_id: &str) -> i64 {
    // Never 0, so ids are positive and non-zero.
    ((fnv1a([entity, source, stream, external_id]) >> 1) as i64).max(1)
}

/// FNV-1a over the parts, each ended by 0x1f.
fn fnv1a<const N: usize>(parts: [&str; N]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0x1f)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The match-key columns of `crm_sync.source_records` whose values are
/// hashed into its `keys` column ([`key_hash`]), for finding the records
/// that share a key through one index. An incremental merge looks up that
/// way every enabled rule with one of them and without a company or
/// contact id (those join through the id's own index); phone is not
/// hashed: the shipped rule pairs it with the name.
pub const HASHED_KEYS: [&str; 4] = ["email", "name_key", "domain", "company_key"];

/// A record's key value as its `keys` column holds it: FNV-1a over
/// `entity/column/value`. Equal hashes are candidates only: the values
/// themselves are compared after.
pub fn key_hash(entity: &str, column: &str, value: &str) -> i64 {
    fnv1a([entity, column, value]) as i64
}

/// The unified id of every member, in order (in memory: for tests and small
/// sets; the merge feeds [`Groups`] from SQL, a key group at a time).
pub fn resolve(members: &[Member]) -> Vec<i64> {
    let rules = members.iter().map(|m| m.keys.len()).max().unwrap_or(0);
    let mut groups = Groups::default();
    for r in 0..rules {
        let mut by_key: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
        for m in members {
            if let Some(Some(k)) = m.keys.get(r) {
                by_key.entry(k).or_default().push((m.id, m.first_seen));
            }
        }
        for same in by_key.values().filter(|v| v.len() > 1) {
            groups.link(same);
        }
    }
    members.iter().map(|m| groups.leader(m.id)).collect()
}

/// Union-find over the records that share a key with another record (the
/// rest are groups of one, named by themselves): memory grows with the
/// records that match, not with every record. Each set's root is its
/// earliest-seen record (then the smallest id), which names the group.
#[derive(Debug, Default)]
pub struct Groups {
    index: HashMap<i64, usize>,
    /// (first_seen, id, parent index)
    nodes: Vec<(i64, i64, usize)>,
}

impl Groups {
    /// Records that share one key (id, first_seen): one group.
    pub fn link(&mut self, same: &[(i64, i64)]) {
        let mut root: Option<usize> = None;
        for &(id, first_seen) in same {
            let i = self.node(id, first_seen);
            let r = self.find(i);
            root = Some(match root {
                None => r,
                Some(q) => self.union(q, r),
            });
        }
    }

    /// How many records take part (share a key with another).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The unified id of record `id`: its group's earliest-seen record.
    pub fn leader(&mut self, id: i64) -> i64 {
        match self.index.get(&id) {
            Some(&i) => {
                let r = self.find(i);
                self.nodes[r].1
            }
            None => id,
        }
    }

    /// Every record that takes part, with its unified id.
    pub fn leaders(&mut self) -> Vec<(i64, i64)> {
        (0..self.nodes.len())
            .map(|i| {
                let r = self.find(i);
                (self.nodes[i].1, self.nodes[r].1)
            })
            .collect()
    }

    fn node(&mut self, id: i64, first_seen: i64) -> usize {
        let next = self.nodes.len();
        let i = *self.index.entry(id).or_insert(next);
        if i == next {
            self.nodes.push((first_seen, id, i));
        }
        i
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.nodes[x].2 != x {
            let up = self.nodes[self.nodes[x].2].2;
            self.nodes[x].2 = up;
            x = up;
        }
        x
    }

    /// Join two roots; the earlier-seen one stays the root.
    fn union(&mut self, a: usize, b: usize) -> usize {
        if a == b {
            return a;
        }
        let key = |n: &(i64, i64, usize)| (n.0, n.1);
        let (keep, under) = if key(&self.nodes[a]) <= key(&self.nodes[b]) {
            (a, b)
        } else {
            (b, a)
        };
        self.nodes[under].2 = keep;
        keep
    }
}

/// A record of an incremental merge's scope, as the model has it before
/// the merge links it again.
#[derive(Debug, Clone, Copy)]
pub struct Scoped {
    pub id: i64,
    /// When the model first saw the record (epoch microseconds).
    pub first_seen: i64,
    /// Its row of `crm_sync.unified_ids` (the unified id of a record that
    /// is not its row's own).
    pub had: Option<i64>,
    /// Whether a unified row with the record's own id exists.
    pub own_row: bool,
}

/// What linking a scope's records again changes in the model's ids.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Relinked {
    /// (old, new): unified ids that no longer name a group, each merged
    /// into the group of its earliest record (ties by id); by old id.
    pub merged: Vec<(i64, i64)>,
    /// (record, unified id): the `crm_sync.unified_ids` rows to write, for
    /// records that are not their row's own and whose id changes; by record.
    pub point: Vec<(i64, i64)>,
    /// Records that are their row's own again: their `unified_ids` row goes.
    pub own: Vec<i64>,
    /// Every unified id touched, before and after, sorted.
    pub affected: Vec<i64>,
    /// The ids of `affected` that no record of the scope has now: their
    /// rows may have lost their last record (the others have one).
    pub left: Vec<i64>,
}

/// The new unified id of every record of `scope` (its group's leader in
/// `groups`) against the id it had: a record without a `unified_ids` row
/// was in the row of its own id if that row exists, and in none if not
/// (new to the model).
pub fn relink(scope: &[Scoped], groups: &mut Groups) -> Relinked {
    let news: Vec<i64> = scope.iter().map(|r| groups.leader(r.id)).collect();
    let old = |r: &Scoped| r.had.or(r.own_row.then_some(r.id));
    // Ids still naming their own group.
    let kept: std::collections::HashSet<i64> = scope
        .iter()
        .zip(&news)
        .filter(|(r, new)| r.id == **new)
        .map(|(r, _)| r.id)
        .collect();
    let mut out = Relinked::default();
    // For each old id gone, the earliest record that had it.
    let mut gone: HashMap<i64, (i64, i64, i64)> = HashMap::new();
    for (r, &new) in scope.iter().zip(&news) {
        if let Some(o) = old(r) {
            out.affected.push(o);
            if !kept.contains(&o) {
                let e = gone.entry(o).or_insert((r.first_seen, r.id, new));
                if (r.first_seen, r.id) < (e.0, e.1) {
                    *e = (r.first_seen, r.id, new);
                }
            }
        }
        out.affected.push(new);
        if new != r.id && r.had != Some(new) {
            out.point.push((r.id, new));
        }
        if new == r.id && r.had.is_some() {
            out.own.push(r.id);
        }
    }
    out.merged = gone.into_iter().map(|(o, (_, _, n))| (o, n)).collect();
    out.merged.sort_unstable();
    out.point.sort_unstable();
    out.own.sort_unstable();
    out.affected.sort_unstable();
    out.affected.dedup();
    let now: std::collections::HashSet<i64> = news.into_iter().collect();
    out.left = out
        .affected
        .iter()
        .copied()
        .filter(|id| !now.contains(id))
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(id: i64, first_seen: i64, had: Option<i64>, own_row: bool) -> Scoped {
        Scoped {
            id,
            first_seen,
            had,
            own_row,
        }
    }

    #[test]
    fn relinking_merges_splits_and_welcomes_records() {
        // 1 (row 1) and 2 (row 2) now share a key: 2 joins 1's row and its
        // id is merged into 1. 3 was in 1's row and leaves it (its own row
        // again, never before shown: nothing merged). 4 is new to the model.
        let mut g = Groups::default();
        g.link(&[(1, 10), (2, 20)]);
        let scope = [
            sc(1, 10, None, true),
            sc(2, 20, None, true),
            sc(3, 30, Some(1), false),
            sc(4, 40, None, false),
        ];
        let r = relink(&scope, &mut g);
        assert_eq!(r.merged, vec![(2, 1)]);
        assert_eq!(r.point, vec![(2, 1)]);
        assert_eq!(r.own, vec![3]);
        assert_eq!(r.affected, vec![1, 2, 3, 4]);
        // Row 2 may be empty now; 1, 3 and 4 have a record.
        assert_eq!(r.left, vec![2]);
        // Nothing changes the second time round.
        let again = [
            sc(1, 10, None, true),
            sc(2, 20, Some(1), false),
            sc(3, 30, None, true),
        ];
        let r = relink(&again, &mut g);
        assert_eq!((r.merged, r.point, r.own), (vec![], vec![], vec![]));
    }

    #[test]
    fn new_records_merge_nothing_and_ties_go_to_the_smaller_id() {
        // 7 and 8 are new to the model (no row of their own, none to point
        // at) and join 3's row; 3 and 4 had rows 3 and 4, seen at the same
        // time, and now share a key: 3 leads (the smaller id), row 4 is
        // merged into it. 9 points at row 4 (stale: it joins 3 too).
        let mut g = Groups::default();
        g.link(&[(4, 50), (3, 50), (7, 60), (8, 70), (9, 80)]);
        let scope = [
            sc(4, 50, None, true),
            sc(3, 50, None, true),
            sc(7, 60, None, false),
            sc(8, 70, None, false),
            sc(9, 80, Some(4), false),
        ];
        let r = relink(&scope, &mut g);
        assert_eq!(r.merged, vec![(4, 3)]);
        assert_eq!(r.point, vec![(4, 3), (7, 3), (8, 3), (9, 3)]);
        assert_eq!(r.own, Vec::<i64>::new());
        assert_eq!(r.affected, vec![3, 4]);
        assert_eq!(r.left, vec![4]);
    }

    #[test]
    fn a_row_whose_leader_left_goes_to_the_earliest_record_that_had_it() {
        // Row 1 held 1, 5 and 6; 1 now joins 9's older group, 5 and 6 stay
        // together, under 5 (seen with 6, the smaller id).
        let mut g = Groups::default();
        g.link(&[(9, 1), (1, 10)]);
        g.link(&[(6, 30), (5, 30)]);
        let scope = [
            sc(9, 1, None, true),
            sc(1, 10, None, true),
            sc(6, 30, Some(1), false),
            sc(5, 30, Some(1), false),
        ];
        let r = relink(&scope, &mut g);
        // 1 is the earliest of those that had row 1: row 1 is merged into
        // 1's new group, 9, not into 5's.
        assert_eq!(r.merged, vec![(1, 9)]);
        assert_eq!(r.point, vec![(1, 9), (6, 5)]);
        assert_eq!(r.own, vec![5]);
        assert_eq!(r.affected, vec![1, 5, 9]);
        assert_eq!(r.left, vec![1]);
    }

    fn m(id: i64, seen: i64, keys: &[Option<&str>]) -> Member {
        Member {
            id,
            first_seen: seen,
            keys: keys.iter().map(|k| k.map(str::to_owned)).collect(),
        }
    }

    #[test]
    fn records_sharing_a_key_are_one_and_chains_join() {
        // 1 and 2 share an email; 2 and 3 share phone+name; 4 is alone.
        let ms = [
            m(10, 5, &[Some("a@x.io"), None]),
            m(20, 1, &[Some("a@x.io"), Some("+1555|ada")]),
            m(30, 9, &[None, Some("+1555|ada")]),
            m(40, 0, &[Some("b@x.io"), None]),
        ];
        assert_eq!(resolve(&ms), vec![20, 20, 20, 40]);
    }

    #[test]
    fn ids_do_not_depend_on_order_and_stay_when_records_join_later() {
        let ms = vec![
            m(7, 100, &[Some("k"), None]),
            m(3, 200, &[Some("k"), None]),
            m(5, 300, &[Some("j"), Some("p")]),
        ];
        let mut rev = ms.clone();
        rev.reverse();
        let a = resolve(&ms);
        let mut b = resolve(&rev);
        b.reverse();
        assert_eq!(a, b);
        // 7 was seen first, so the group keeps 7 though 3 is smaller.
        assert_eq!(a, vec![7, 7, 5]);
        // A later record sharing an email with one group and a phone with
        // the other merges them, under the earlier group's id.
        let mut more = ms.clone();
        more.push(m(1, 400, &[Some("k"), Some("p")]));
        assert_eq!(resolve(&more), vec![7, 7, 7, 7]);
    }

    /// The groups, found the slow way: records joined while any two of
    /// different groups share a key.
    fn naive(ms: &[Member]) -> Vec<i64> {
        let mut g: Vec<usize> = (0..ms.len()).collect();
        loop {
            let mut moved = false;
            for i in 0..ms.len() {
                for j in 0..ms.len() {
                    let shared = ms[i]
                        .keys
                        .iter()
                        .zip(&ms[j].keys)
                        .any(|(a, b)| a.is_some() && a == b);
                    if shared && g[i] != g[j] {
                        let (keep, drop) = (g[i].min(g[j]), g[i].max(g[j]));
                        g.iter_mut().filter(|x| **x == drop).for_each(|x| *x = keep);
                        moved = true;
                    }
                }
            }
            if !moved {
                break;
            }
        }
        (0..ms.len())
            .map(|i| {
                let best = (0..ms.len())
                    .filter(|&j| g[j] == g[i])
                    .min_by_key(|&j| (ms[j].first_seen, ms[j].id))
                    .unwrap();
                ms[best].id
            })
            .collect()
    }

    #[test]
    fn union_find_agrees_with_the_slow_way_on_random_records() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..200 {
            let n = rng.usize(1..40);
            let ms: Vec<Member> = (0..n)
                .map(|i| Member {
                    id: 1000 - i as i64 * 7 % 13 * 100 - i as i64,
                    first_seen: rng.i64(0..5),
                    keys: (0..2)
                        .map(|_| rng.bool().then(|| rng.u8(0..6).to_string()))
                        .collect(),
                })
                .collect();
            assert_eq!(resolve(&ms), naive(&ms), "round {round}: {ms:?}");
        }
    }

    #[test]
    fn only_records_that_share_a_key_take_part() {
        let mut g = Groups::default();
        g.link(&[(5, 10), (6, 3)]);
        g.link(&[(7, 9), (6, 3)]);
        g.link(&[(8, 1), (9, 1)]);
        assert_eq!(g.len(), 5);
        let mut l = g.leaders();
        l.sort();
        assert_eq!(l, vec![(5, 6), (6, 6), (7, 6), (8, 8), (9, 8)]);
        assert_eq!(g.leader(42), 42, "a record of its own names itself");
    }

    #[test]
    fn missing_keys_never_link() {
        let ms = [m(1, 0, &[None]), m(2, 0, &[None])];
        assert_eq!(resolve(&ms), vec![1, 2]);
    }

    #[test]
    fn key_hashes_tell_entities_columns_and_values_apart() {
        let a = key_hash("contact", "email", "ada@example.com");
        assert_eq!(a, key_hash("contact", "email", "ada@example.com"));
        assert_ne!(a, key_hash("company", "email", "ada@example.com"));
        assert_ne!(a, key_hash("contact", "name_key", "ada@example.com"));
        assert_ne!(a, key_hash("contact", "email", "ada@example.co"));
        // The separator keeps the parts apart.
        assert_ne!(
            key_hash("contact", "email", "xy"),
            key_hash("contact", "emailx", "y")
        );
    }

    #[test]
    fn record_ids_are_stable_positive_and_distinct() {
        let a = record_id("contact", "hs", "contacts", "101");
        assert_eq!(a, record_id("contact", "hs", "contacts", "101"));
        assert!(a > 0);
        assert_ne!(a, record_id("contact", "hs", "contacts", "1010"));
        assert_ne!(
            record_id("contact", "hs", "contacts1", "0"),
            record_id("contact", "hs", "contacts", "10")
        );
    }
}
