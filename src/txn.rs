//! Transactions the extension drives itself: subtransactions (a stream of
//! a foreground sync, the merge after it), the top-level transactions of
//! background workers, which commit in steps, and the interrupt check that
//! lets a cancel or statement timeout end them.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pgrx::prelude::*;

use crate::errors::{Context, Failure};

/// Run `f` in a subtransaction (the dance of PL/pgSQL's exception blocks):
/// it is kept if `f` returns a value `keep` accepts, and rolled back if `f`
/// raises or `keep` refuses; either way the transaction goes on.
pub fn subtransaction<R>(
    f: impl FnOnce() -> R,
    keep: impl FnOnce(&R) -> bool,
) -> std::thread::Result<R> {
    // SAFETY: begun and ended here, with the memory context and resource
    // owner of the caller restored afterwards.
    let (old_cxt, old_owner) =
        unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(old_cxt);
    }
    let result = catch_unwind(AssertUnwindSafe(f));
    let commit = matches!(&result, Ok(r) if keep(r));
    unsafe {
        if commit {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::MemoryContextSwitchTo(old_cxt);
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(old_cxt);
        pg_sys::CurrentResourceOwner = old_owner;
    }
    result
}

/// Run `f` in a subtransaction: on an error, roll back what it did and
/// return the error's message (the transaction goes on).
pub fn in_subtransaction<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    subtransaction(f, |_| true)
        .map_err(|panic| Failure::of_panic(panic, &Context::default()).message)
}

/// Start a transaction in a background worker's main loop.
pub fn begin() {
    // SAFETY: called from a worker's main loop, outside any transaction.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
}

/// Commit the transaction [`begin`] started.
pub fn commit() {
    // SAFETY: pairs with begin().
    unsafe {
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
    }
}

/// Roll back after an error was caught; releases locks and snapshots.
pub fn abort() {
    // SAFETY: after an error was caught, in a worker's own transaction.
    unsafe { pg_sys::AbortCurrentTransaction() };
}

/// Commit what a background run has written and go on in a new transaction.
pub fn commit_and_continue() {
    commit();
    begin();
}

/// One hold on a Postgres holdoff counter (`QueryCancelHoldoffCount`,
/// `InterruptHoldoffCount`): counted up when taken, down when dropped, which
/// also happens while an ERROR unwinds. An ERROR raised while held resets
/// the counter to 0 (errfinish, as Postgres' error recovery does) before it
/// unwinds here: never below 0. Not `Send`: the counters are the backend
/// main thread's.
struct Holdoff(*mut u32);

impl Holdoff {
    /// # Safety
    /// `counter` is one of Postgres' holdoff counters; called on the
    /// backend's main thread.
    unsafe fn take(counter: *mut u32) -> Self {
        unsafe { *counter += 1 };
        Holdoff(counter)
    }
}

impl Drop for Holdoff {
    fn drop(&mut self) {
        // SAFETY: as in take.
        unsafe { *self.0 = (*self.0).saturating_sub(1) };
    }
}

/// While alive, a cancel (SIGINT: `crm_sync.cancel()`, the launcher,
/// `pg_cancel_backend()`) waits: it stays pending and acts at the first
/// interrupt check after (Postgres' HOLD_CANCEL_INTERRUPTS). What records
/// a run's end holds one, so a cancel signalled again cannot lose it.
pub struct CancelHeld {
    _hold: Holdoff,
}

pub fn hold_cancel() -> CancelHeld {
    // SAFETY: Postgres' cancel holdoff counter, on the main thread.
    CancelHeld {
        _hold: unsafe { Holdoff::take(&raw mut pg_sys::QueryCancelHoldoffCount) },
    }
}

/// While alive, every interrupt waits (Postgres' HOLD_INTERRUPTS): a
/// cancel, a statement timeout, a termination. They stay pending and act
/// at the first interrupt check after.
pub struct InterruptsHeld {
    _hold: Holdoff,
}

pub fn hold_interrupts() -> InterruptsHeld {
    // SAFETY: Postgres' interrupt holdoff counter, on the main thread.
    InterruptsHeld {
        _hold: unsafe { Holdoff::take(&raw mut pg_sys::InterruptHoldoffCount) },
    }
}

/// Forget a pending cancel: the run it asked to stop has stopped, and the
/// same request, signalled again, has nothing left to cancel.
pub fn forget_cancel(_held: &CancelHeld) {
    // SAFETY: the backend's main thread; Postgres clears it the same way
    // after an error.
    unsafe { pg_sys::QueryCancelPending = 0 };
}

/// Lets Postgres act on a cancel or statement timeout (raises if pending).
pub fn check_interrupts() {
    pgrx::check_for_interrupts!();
}

/// Pin this session's `search_path` to `pg_catalog, pg_temp`: what a
/// background worker runs first after connecting. Workers run as the
/// extension's owner; the database's own `search_path` (which a database
/// owner may set to `public, pg_catalog`) would let functions and operators
/// planted in `public` shadow the ones its SQL means (CVE-2018-1058). The
/// call itself is qualified, so nothing is resolved through the old path.
pub fn pin_search_path() {
    Spi::run("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)")
        .expect("pin search_path");
}
