//! OAuth access tokens of this process, shared by every sync of a backend:
//! one per credential set (the connector's key), with what came with it
//! (an API host the token answer named), until shortly before it expires.
//! Tokens live in backend memory only, never in a table.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token and what its answer named beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub token: String,
    pub extra: Option<String>,
}

static TOKENS: Mutex<Option<HashMap<u64, (Cached, Instant)>>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut HashMap<u64, (Cached, Instant)>) -> T) -> T {
    let mut guard = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// `key`'s token, unless it expires within `early`.
pub fn get(key: u64, early: Duration) -> Option<Cached> {
    with(|m| {
        m.get(&key)
            .filter(|(_, until)| Instant::now() + early < *until)
            .map(|(c, _)| c.clone())
    })
}

/// Keep `token` for `key`, valid for `lifetime` from now.
pub fn put(key: u64, token: String, extra: Option<String>, lifetime: Duration) {
    with(|m| m.insert(key, (Cached { token, extra }, Instant::now() + lifetime)));
}

/// Forget `key`'s token (its credentials changed).
pub fn forget(key: u64) {
    with(|m| m.remove(&key));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_served_until_shortly_before_it_expires() {
        put(
            0xfeed,
            "t".into(),
            Some("https://api".into()),
            Duration::from_secs(100),
        );
        let c = get(0xfeed, Duration::from_secs(60)).unwrap();
        assert_eq!(
            (c.token.as_str(), c.extra.as_deref()),
            ("t", Some("https://api"))
        );
        assert_eq!(get(0xfeed, Duration::from_secs(120)), None);
        forget(0xfeed);
        assert_eq!(get(0xfeed, Duration::ZERO), None);
    }
}
