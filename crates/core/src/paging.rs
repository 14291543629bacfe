//! Guards for paging loops: a server that sends a cursor it sent before
//! (A → B → A) would keep a run reading forever. Every reader notes the
//! cursors it follows here; one that comes back stops the run with a bad
//! response (08P01). The engine bounds the pages of a run whose CRM
//! reported a total (see `engine`).

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::error::{CrmError, Result};

/// The cursors one paging loop has followed.
#[derive(Debug, Default, Clone)]
pub struct Cursors {
    seen: HashSet<u64>,
}

impl Cursors {
    /// Note that `cursor` is followed next; an error if it was followed
    /// before in this loop. `what` names it (`HubSpot's paging.next.after`).
    pub fn follow(&mut self, what: &str, cursor: &str) -> Result<()> {
        let mut h = DefaultHasher::new();
        cursor.hash(&mut h);
        if self.seen.insert(h.finish()) {
            return Ok(());
        }
        Err(CrmError::bad_response(format!(
            "{what} came back to a cursor it had sent {} pages before or earlier; stopping instead of paging forever",
            self.seen.len()
        ))
        .with_hint("The API or something in between is looping; run the sync again later."))
    }

    /// Forget every cursor (a new query starts).
    pub fn clear(&mut self) {
        self.seen.clear();
    }
}

/// Most pages a run may read after its CRM reported `total` matching
/// records: twice as many as records, and some more, for records that
/// change while the run pages.
pub fn page_bound(total: u64) -> u64 {
    total.saturating_mul(2).saturating_add(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_that_comes_back_is_an_error() {
        let mut c = Cursors::default();
        c.follow("the next page link", "A").unwrap();
        c.follow("the next page link", "B").unwrap();
        let e = c.follow("the next page link", "A").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::BadResponse);
        assert!(
            e.message.contains("the next page link came back"),
            "{}",
            e.message
        );
        c.clear();
        c.follow("the next page link", "A").unwrap();
    }
}
