//! A request budget the processes calling one CRM account share: HubSpot
//! allows each app a number of calls per rolling window per account, and
//! every backend syncing that account (a foreground sync, each worker)
//! spends from the same one. The extension keeps the counters in shared
//! memory ([`set_shared`]); this module holds the rule, plain data in and
//! out, so it is tested here.
//!
//! The rolling window of `max` calls per `interval` is kept as quarter
//! windows of `max / 5` calls each: any stretch of one interval touches at
//! most five quarters, so however the calls fall, no rolling window sees
//! more than `max`.

use std::sync::OnceLock;
use std::time::Duration;

/// One account's counters (what shared memory holds per account).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Whose budget (a hash of the account's host and credentials); 0: free.
    pub key: u64,
    /// Calls allowed per `interval_ms` (as the CRM's headers say).
    pub max: u32,
    pub interval_ms: u32,
    /// Start of the current quarter window, epoch ms.
    pub start_ms: i64,
    /// Calls taken in it.
    pub taken: u32,
    /// Last use, epoch ms (the least recently used slot is reused).
    pub used_ms: i64,
}

/// Until the CRM says: HubSpot's smallest allowance, 100 calls per 10 s.
pub const DEFAULT_MAX: u32 = 100;
pub const DEFAULT_INTERVAL_MS: u32 = 10_000;

impl Window {
    pub fn new(key: u64, now_ms: i64) -> Window {
        Window {
            key,
            max: DEFAULT_MAX,
            interval_ms: DEFAULT_INTERVAL_MS,
            start_ms: now_ms,
            taken: 0,
            used_ms: now_ms,
        }
    }

    fn quarter_ms(&self) -> i64 {
        (i64::from(self.interval_ms) / 4).max(1)
    }

    fn quota(&self) -> u32 {
        (self.max / 5).max(1)
    }

    /// Now, in epoch milliseconds.
    pub fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default()
    }

    /// Take one call now, or say how long to wait before asking again.
    pub fn take(&mut self, now_ms: i64) -> Option<Duration> {
        self.used_ms = now_ms;
        let q = self.quarter_ms();
        // A clock read a moment before another backend's counts in the
        // current quarter (never rewinds it).
        if now_ms >= self.start_ms + q {
            self.start_ms = now_ms - (now_ms - self.start_ms).rem_euclid(q);
            self.taken = 0;
        }
        if self.taken < self.quota() {
            self.taken += 1;
            return None;
        }
        Some(Duration::from_millis(
            (self.start_ms + q - now_ms).max(1) as u64
        ))
    }

    /// What the CRM reports the budget to be.
    pub fn learn(&mut self, max: u32, interval_ms: u32) {
        if max > 0 && interval_ms > 0 {
            self.max = max;
            self.interval_ms = interval_ms.min(60_000);
        }
    }
}

/// Where the shared counters live.
pub trait SharedBudget: Send + Sync {
    /// Take one call of `key`'s budget now, or say how long to wait (the
    /// clock is read under the budget's lock).
    fn take(&self, key: u64) -> Option<Duration>;
    /// Record what the CRM says `key`'s budget is.
    fn learn(&self, key: u64, max: u32, interval_ms: u32);
}

static SHARED: OnceLock<Box<dyn SharedBudget>> = OnceLock::new();

/// Install the process's shared budget (once; the extension does it when
/// preloaded, where shared memory exists).
pub fn set_shared(b: Box<dyn SharedBudget>) {
    let _ = SHARED.set(b);
}

pub fn shared() -> Option<&'static dyn SharedBudget> {
    SHARED.get().map(|b| b.as_ref())
}

/// The slot for `key` among `slots`: its own, a free one, or the least
/// recently used (an account not called for longest gives its place).
pub fn slot_for(slots: &mut [Window], key: u64, now_ms: i64) -> &mut Window {
    let i = slots
        .iter()
        .position(|w| w.key == key)
        .or_else(|| slots.iter().position(|w| w.key == 0))
        .unwrap_or_else(|| {
            slots
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.used_ms)
                .map(|(i, _)| i)
                .unwrap_or(0)
        });
    if slots[i].key != key {
        slots[i] = Window::new(key, now_ms);
    }
    &mut slots[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rolling_window_sees_more_than_max() {
        let mut w = Window::new(7, 0);
        w.learn(10, 1000);
        // Callers asking every millisecond for 5 s.
        let mut calls = Vec::new();
        for t in 0..5000i64 {
            if w.take(t).is_none() {
                calls.push(t);
            }
        }
        assert!(calls.len() >= 40, "{} calls in 5 s at 10/s", calls.len());
        for (i, &t) in calls.iter().enumerate() {
            let in_window = calls[i..].iter().take_while(|&&u| u < t + 1000).count();
            assert!(in_window <= 10, "{in_window} calls in the second from {t}");
        }
    }

    #[test]
    fn a_wait_is_until_the_next_quarter() {
        let mut w = Window::new(1, 1000);
        w.learn(10, 1000); // 2 a quarter of 250 ms
        assert_eq!(w.take(1000), None);
        assert_eq!(w.take(1010), None);
        assert_eq!(w.take(1100), Some(Duration::from_millis(150)));
        assert_eq!(w.take(1250), None);
        // A clock a little behind counts in the current quarter.
        assert_eq!(w.take(1249), None);
        assert_eq!(w.take(1249), Some(Duration::from_millis(251)));
    }

    #[test]
    fn slots_are_found_reused_and_given_up_least_recently_used_first() {
        let mut slots = [Window::default(); 2];
        slot_for(&mut slots, 11, 0).take(0);
        slot_for(&mut slots, 22, 5).take(5);
        let again = slot_for(&mut slots, 11, 6);
        assert_eq!(again.taken, 1);
        again.take(6);
        // 22 was used longest ago: 33 takes its place.
        let w = slot_for(&mut slots, 33, 7);
        assert_eq!((w.key, w.taken), (33, 0));
        assert!(slots.iter().any(|w| w.key == 11));
    }
}
