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
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [entity, source, stream, external_id] {
        for b in part.bytes().chain(std::iter::once(0x1f)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    // Never 0, so ids are positive and non-zero.
    ((h >> 1) as i64).max(1)
}

/// The unified id of every member, in order.
pub fn resolve(members: &[Member]) -> Vec<i64> {
    let n = members.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let rules = members.iter().map(|m| m.keys.len()).max().unwrap_or(0);
    for r in 0..rules {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            let Some(Some(k)) = m.keys.get(r) else {
                continue;
            };
            match first.get(k.as_str()) {
                Some(&j) => {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    if a != b {
                        parent[a] = b;
                    }
                }
                None => {
                    first.insert(k, i);
                }
            }
        }
    }
    // The earliest-seen member (then the smallest id) names its group.
    let mut best: HashMap<usize, usize> = HashMap::new();
    for i in 0..n {
        let root = find(&mut parent, i);
        let e = best.entry(root).or_insert(i);
        let (a, b) = (&members[i], &members[*e]);
        if (a.first_seen, a.id) < (b.first_seen, b.id) {
            *e = i;
        }
    }
    (0..n)
        .map(|i| {
            let root = find(&mut parent, i);
            members[best[&root]].id
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn missing_keys_never_link() {
        let ms = [m(1, 0, &[None]), m(2, 0, &[None])];
        assert_eq!(resolve(&ms), vec![1, 2]);
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
