//! Shared memory: the launcher's latch (so `sync_async` can wake it) and one
//! progress slot per running sync, read by the `crm_sync.progress` view.
//! Present only when the library is in `shared_preload_libraries`.

use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crm_sync_core::http::budget::{self, SharedBudget, Window};

pub const SLOTS: usize = 64;
const NAME_LEN: usize = 64;

#[derive(Clone, Copy)]
pub struct Slot {
    pub pid: i32,
    pub job_id: i64,
    pub run_id: i64,
    source: [u8; NAME_LEN],
    stream: [u8; NAME_LEN],
    pub full: bool,
    /// Epoch microseconds.
    pub started_us: i64,
    pub updated_us: i64,
    pub records: i64,
    pub pages: i64,
    pub bytes: i64,
    pub api_calls: i64,
    /// Records the CRM says the run's query matches; -1 when unknown.
    pub total: i64,
}

impl Slot {
    const EMPTY: Slot = Slot {
        pid: 0,
        job_id: 0,
        run_id: 0,
        source: [0; NAME_LEN],
        stream: [0; NAME_LEN],
        full: false,
        started_us: 0,
        updated_us: 0,
        records: 0,
        pages: 0,
        bytes: 0,
        api_calls: 0,
        total: -1,
    };

    pub fn source(&self) -> String {
        name_str(&self.source)
    }

    pub fn stream(&self) -> String {
        name_str(&self.stream)
    }
}

fn name_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn name_bytes(s: &str) -> [u8; NAME_LEN] {
    let mut out = [0u8; NAME_LEN];
    // Source and stream names are at most 63 ASCII characters (see the
    // CHECK constraints), so this never cuts a character.
    let n = s.len().min(NAME_LEN - 1);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

#[derive(Clone, Copy)]
pub struct Board {
    /// `&MyProc->procLatch` of the launcher (0: none running). Shared
    /// memory is mapped at the same address in every backend.
    launcher_latch: usize,
    pub slots: [Slot; SLOTS],
    /// The request budgets of the CRM accounts being called
    /// (`crm_sync_core::http::budget`), shared by every backend.
    budgets: [Window; BUDGETS],
}

/// CRM accounts whose budgets are kept at once (the least recently called
/// gives its place).
const BUDGETS: usize = 32;

impl Default for Board {
    fn default() -> Self {
        Board {
            launcher_latch: 0,
            slots: [Slot::EMPTY; SLOTS],
            budgets: [Window::default(); BUDGETS],
        }
    }
}

// SAFETY: plain old data, no pointers into process-local memory (the latch
// address points into shared memory).
unsafe impl PGRXSharedMemory for Board {}

static BOARD: PgLwLock<Board> = unsafe { PgLwLock::new(c"pg_crm_sync board") };
static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Called from `_PG_init` while shared_preload_libraries are loading.
#[allow(unexpected_cfgs)] // pg_shmem_init! tests features of every PG version
pub fn init() {
    pg_shmem_init!(BOARD);
    PRELOADED.store(true, Ordering::Relaxed);
    budget::set_shared(Box::new(ShmemBudget));
}

/// The request budgets in shared memory: every backend of the cluster
/// calling one CRM account waits its turn in the same counters. Used only
/// from a backend's main thread (where HTTP futures are polled).
struct ShmemBudget;

impl SharedBudget for ShmemBudget {
    fn take(&self, key: u64) -> Option<std::time::Duration> {
        let mut b = BOARD.exclusive();
        let now = Window::now_ms();
        budget::slot_for(&mut b.budgets, key, now).take(now)
    }

    fn learn(&self, key: u64, max: u32, interval_ms: u32) {
        let now = crate::catalog::now_us() / 1000;
        let mut b = BOARD.exclusive();
        budget::slot_for(&mut b.budgets, key, now).learn(max, interval_ms);
    }
}

/// Whether the library was preloaded (and the board exists).
pub fn available() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

pub fn set_launcher_latch(on: bool) {
    if !available() {
        return;
    }
    let latch = if on {
        // SAFETY: MyProc is set in a connected background worker.
        unsafe { std::ptr::addr_of_mut!((*pg_sys::MyProc).procLatch) as usize }
    } else {
        0
    };
    BOARD.exclusive().launcher_latch = latch;
}

/// Wake the launcher, if one runs, to look at the queue now.
pub fn wake_launcher() {
    if !available() {
        return;
    }
    let latch = BOARD.share().launcher_latch;
    if latch != 0 {
        // SAFETY: the address is the launcher's latch in shared memory;
        // SetLatch on a latch of an exited process is harmless.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

/// A claimed progress slot, freed on drop (also when an error unwinds).
pub struct ProgressSlot {
    index: Option<usize>,
}

impl ProgressSlot {
    pub fn claim(job_id: Option<i64>, run_id: i64, source: &str, stream: &str, full: bool) -> Self {
        if !available() {
            return ProgressSlot { index: None };
        }
        let pid = unsafe { pg_sys::MyProcPid };
        let now = crate::catalog::now_us();
        let mut b = BOARD.exclusive();
        // A slot of this backend left behind (an error in an earlier run of
        // the session that skipped the drop) is reused first.
        let free = b
            .slots
            .iter()
            .position(|s| s.pid == pid)
            .or_else(|| b.slots.iter().position(|s| s.pid == 0 || !alive(s.pid)));
        let Some(i) = free else {
            return ProgressSlot { index: None };
        };
        b.slots[i] = Slot {
            pid,
            job_id: job_id.unwrap_or(0),
            run_id,
            source: name_bytes(source),
            stream: name_bytes(stream),
            full,
            started_us: now,
            updated_us: now,
            ..Slot::EMPTY
        };
        ProgressSlot { index: Some(i) }
    }

    pub fn update(&self, records: u64, pages: u64, bytes: u64, api_calls: u64, total: Option<u64>) {
        let Some(i) = self.index else { return };
        let mut b = BOARD.exclusive();
        let s = &mut b.slots[i];
        s.records = records as i64;
        s.pages = pages as i64;
        s.bytes = bytes as i64;
        s.api_calls = api_calls as i64;
        s.total = total.map_or(-1, |t| t as i64);
        s.updated_us = crate::catalog::now_us();
    }
}

impl Drop for ProgressSlot {
    fn drop(&mut self) {
        if let Some(i) = self.index {
            BOARD.exclusive().slots[i] = Slot::EMPTY;
        }
    }
}

/// Whether `pid` is a live process (slots of crashed backends are cleared
/// when the postmaster reinitialises shared memory, but a backend killed
/// on its own leaves one).
fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks existence.
    unsafe { libc_kill(pid, 0) == 0 }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// The running syncs.
pub fn snapshot() -> Vec<Slot> {
    if !available() {
        return vec![];
    }
    let b = BOARD.share();
    b.slots
        .iter()
        .filter(|s| s.pid != 0 && alive(s.pid))
        .copied()
        .collect()
}
