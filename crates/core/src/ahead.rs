//! Pure work on a helper thread while the caller's thread does its own:
//! the merge cleans one page of landing rows (phone numbers, emails, keys)
//! while the backend's main thread reads the next page and writes the
//! previous one to Postgres. The helper runs only the `work` function it is
//! given, which must not touch Postgres; it takes no signals (they are the
//! main thread's: cancel, statement_timeout, latch wake-ups).

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

/// A helper thread's stack: as large as a backend's usual main-thread
/// stack, for work that recurses with its input (the JSON encoder goes
/// 1,000 levels deep before it gives up); Rust's default is 2 MiB, and an
/// overflow on a thread that takes no signals ends the whole backend.
pub const HELPER_STACK: usize = 8 << 20;

/// The caller's end: pages go in with [`Ahead::send`] and come back, in
/// order, worked, with [`Ahead::recv`].
pub struct Ahead<'w, I, O> {
    how: How<'w, I, O>,
    in_flight: usize,
}

enum How<'w, I, O> {
    /// On the helper thread.
    Helper {
        tx: Option<SyncSender<I>>,
        rx: Receiver<Worked<O>>,
        back: Sender<O>,
    },
    /// The helper could not start (a process or thread limit): the pages
    /// are worked on the caller's thread as they are sent.
    Inline {
        work: &'w (dyn Fn(I) -> O + Sync),
        done: VecDeque<O>,
    },
}

/// A worked page, or why the helper failed on it (its panic).
type Worked<O> = Result<O, Box<dyn Any + Send>>;

impl<I, O> Ahead<'_, I, O> {
    /// Hand a page to the helper; waits while it still holds one not yet
    /// started (up to three pages can be out of the caller's hands: one
    /// waiting, one being worked, one done).
    pub fn send(&mut self, page: I) {
        match &mut self.how {
            How::Helper { tx, rx, .. } => {
                let tx = tx.as_ref().expect("the helper thread is running");
                if tx.send(page).is_err() {
                    // It stopped on a page before this one: its panic.
                    fail(rx);
                }
            }
            How::Inline { work, done } => done.push_back(work(page)),
        }
        self.in_flight += 1;
    }

    /// The next worked page, waiting for it; None when none is out. A
    /// panic of the helper's on that page goes on here, on the caller's
    /// thread, with its own message.
    pub fn recv(&mut self) -> Option<O> {
        if self.in_flight == 0 {
            return None;
        }
        let out = match &mut self.how {
            How::Helper { rx, .. } => match rx.recv() {
                Ok(Ok(out)) => out,
                Ok(Err(panic)) => resume_unwind(panic),
                Err(_) => panic!("the helper thread stopped"),
            },
            How::Inline { done, .. } => done.pop_front().expect("a page is out"),
        };
        self.in_flight -= 1;
        Some(out)
    }

    /// Hand a worked page back for the helper to free: its allocations are
    /// the helper's, and freeing them there (a page's many small strings
    /// and maps) keeps the caller's thread on its own work.
    pub fn give_back(&mut self, page: O) {
        if let How::Helper { back, .. } = &self.how {
            // The helper is gone only when the caller is unwinding: drop here.
            let _ = back.send(page);
        }
    }

    /// Pages handed over and not yet taken back.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// The helper stopped: go on with its panic, if it sent one.
fn fail<O>(rx: &Receiver<Worked<O>>) -> ! {
    for worked in rx.try_iter() {
        if let Err(panic) = worked {
            resume_unwind(panic);
        }
    }
    panic!("the helper thread stopped")
}

/// Run `body` with a helper thread that applies `work` to every page the
/// body sends. The helper ends with the body (also when the body panics: a
/// Postgres ERROR unwinds through here, and the helper is joined first).
/// Should no thread start, the body's pages are worked on its own thread.
pub fn with_helper<I, O, R>(
    work: impl Fn(I) -> O + Send + Sync,
    body: impl FnOnce(&mut Ahead<'_, I, O>) -> R,
) -> R
where
    I: Send,
    O: Send,
{
    std::thread::scope(|scope| {
        let (tx, work_rx) = sync_channel::<I>(1);
        let (out_tx, rx) = sync_channel::<Worked<O>>(1);
        let (back, back_rx) = channel::<O>();
        let work = &work;
        let started = without_signals(|| {
            std::thread::Builder::new()
                .name("pg_crm_sync helper".to_owned())
                .stack_size(HELPER_STACK)
                .spawn_scoped(scope, move || {
                    for page in work_rx {
                        // Pages given back are freed before the next is worked.
                        back_rx.try_iter().for_each(drop);
                        let worked = catch_unwind(AssertUnwindSafe(|| work(page)));
                        let failed = worked.is_err();
                        if out_tx.send(worked).is_err() || failed {
                            break;
                        }
                    }
                    back_rx.try_iter().for_each(drop);
                })
        });
        let how = match started {
            Ok(_) => How::Helper {
                tx: Some(tx),
                rx,
                back,
            },
            Err(_) => How::Inline {
                work,
                done: VecDeque::new(),
            },
        };
        let mut ahead = Ahead { how, in_flight: 0 };
        let out = body(&mut ahead);
        // Closing the page channel ends the helper's loop.
        if let How::Helper { tx, .. } = &mut ahead.how {
            *tx = None;
        }
        out
    })
}

/// Start `f` on a detached thread named `name` that takes no signals (see
/// the module comment): work the caller does not wait for, such as loading
/// data ahead of its first use. None if the thread could not start.
pub fn spawn_quiet(name: &str, f: impl FnOnce() + Send + 'static) -> Option<()> {
    without_signals(|| {
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(f)
            .ok()
            .map(drop)
    })
}

/// Run `f` (which starts a thread) with every signal blocked, so that the
/// thread inherits a mask that blocks them all: a host's signal handlers
/// run on its own thread only.
#[cfg(unix)]
fn without_signals<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigfillset and pthread_sigmask are given valid pointers to
    // sets on this stack; the old mask is put back when `_restore` drops,
    // whether `f` returns or panics.
    struct Restore(libc::sigset_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: a valid set saved below; also when `f` panics.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        }
    }
    let _restore = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        Restore(old)
    };
    f()
}

#[cfg(not(unix))]
fn without_signals<T>(f: impl FnOnce() -> T) -> T {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread started by `spawn_quiet` blocks every signal, so that
    /// Postgres' handlers never run on it; the caller's mask is as it was.
    #[cfg(unix)]
    #[test]
    fn a_quiet_thread_takes_no_signals() {
        fn blocked(sig: libc::c_int) -> bool {
            // SAFETY: sets on this stack; a null new set only reads the mask.
            unsafe {
                let mut now: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut now);
                libc::sigismember(&now, sig) == 1
            }
        }
        let caller = [libc::SIGINT, libc::SIGALRM, libc::SIGUSR1].map(blocked);
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_quiet("quiet test", move || {
            let _ =
                tx.send([libc::SIGINT, libc::SIGTERM, libc::SIGALRM, libc::SIGUSR1].map(blocked));
        })
        .expect("a thread starts");
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the thread reports");
        assert_eq!(got, [true; 4]);
        assert_eq!(
            [libc::SIGINT, libc::SIGALRM, libc::SIGUSR1].map(blocked),
            caller
        );
    }

    #[test]
    fn pages_come_back_worked_and_in_order() {
        let got = with_helper(
            |page: Vec<u32>| page.iter().map(|x| x * 2).collect::<Vec<_>>(),
            |a| {
                let mut got = Vec::new();
                for p in 0..10u32 {
                    a.send(vec![p, p + 100]);
                    // One page stays ahead while the caller works.
                    if a.in_flight() > 1 {
                        got.push(a.recv().unwrap());
                    }
                }
                while let Some(p) = a.recv() {
                    got.push(p);
                }
                got
            },
        );
        let want: Vec<Vec<u32>> = (0..10u32).map(|p| vec![p * 2, (p + 100) * 2]).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn pages_given_back_are_freed_on_the_helper_thread() {
        use std::sync::{Arc, Mutex};
        use std::thread::ThreadId;
        struct Page(Arc<Mutex<Vec<ThreadId>>>);
        impl Drop for Page {
            fn drop(&mut self) {
                self.0.lock().unwrap().push(std::thread::current().id());
            }
        }
        let freed = Arc::new(Mutex::new(Vec::new()));
        let f = freed.clone();
        with_helper(
            move |_: u32| Page(f.clone()),
            |a| {
                for p in 0..5 {
                    a.send(p);
                    let page = a.recv().unwrap();
                    a.give_back(page);
                }
            },
        );
        let freed = freed.lock().unwrap();
        assert_eq!(freed.len(), 5);
        assert!(
            freed.iter().all(|t| *t != std::thread::current().id()),
            "{freed:?}"
        );
    }

    #[test]
    fn the_helper_works_while_the_caller_does() {
        use std::sync::{mpsc::channel, Mutex};
        use std::time::Duration;
        // The helper starts a page and waits for the caller to say go: it
        // gets the word only if the caller runs while the page is worked.
        let (started_tx, started) = channel::<()>();
        let (go, go_rx) = channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let heard = with_helper(
            |_: ()| {
                started_tx.send(()).unwrap();
                go_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(10))
                    .is_ok()
            },
            |a| {
                a.send(());
                started.recv_timeout(Duration::from_secs(10)).unwrap();
                go.send(()).unwrap();
                a.recv().unwrap()
            },
        );
        assert!(heard);
    }

    #[test]
    fn a_panicking_caller_ends_the_helper() {
        let r = std::panic::catch_unwind(|| {
            with_helper(
                |x: u32| x + 1,
                |a| {
                    a.send(1);
                    a.send(2);
                    panic!("an ERROR in the caller");
                },
            )
        });
        assert!(r.is_err());
    }

    #[test]
    fn a_panicking_helper_fails_the_caller_with_its_message() {
        let message = |r: std::thread::Result<u32>| {
            let panic = r.expect_err("the helper's panic fails the caller");
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        };
        let work = |x: u32| if x == 3 { panic!("bad page {x}") } else { x };
        // Taking the failed page back.
        let r = std::panic::catch_unwind(|| {
            with_helper(work, |a| {
                let mut sum = 0;
                for x in 0..6 {
                    a.send(x);
                    sum += a.recv().unwrap();
                }
                sum
            })
        });
        assert_eq!(message(r).as_deref(), Some("bad page 3"));
        // Sending the next page after the helper stopped on one.
        let r = std::panic::catch_unwind(|| {
            with_helper(work, |a| {
                a.send(3);
                std::thread::sleep(std::time::Duration::from_millis(50));
                a.send(4);
                a.recv().unwrap()
            })
        });
        assert_eq!(message(r).as_deref(), Some("bad page 3"));
    }

    #[test]
    fn pages_are_worked_inline_when_no_helper_starts() {
        let work = |x: u32| x * 2;
        let mut a = Ahead {
            how: How::Inline {
                work: &work,
                done: VecDeque::new(),
            },
            in_flight: 0,
        };
        a.send(1);
        a.send(2);
        assert_eq!(a.in_flight(), 2);
        assert_eq!(a.recv(), Some(2));
        a.give_back(2);
        assert_eq!(a.recv(), Some(4));
        assert_eq!(a.recv(), None);
    }

    #[test]
    fn the_helper_has_a_backend_sized_stack() {
        // Recursion as deep as the JSON encoder allows itself, with frames
        // of a few hundred bytes: more than Rust's default 2 MiB.
        fn down(n: usize) -> usize {
            let pad = std::hint::black_box([n as u8; 4096]);
            if n == 0 {
                pad[0] as usize
            } else {
                down(n - 1) + pad[n % 4096] as usize
            }
        }
        let depth = 1000;
        let got = with_helper(
            |n: usize| down(n),
            |a| {
                a.send(depth);
                a.recv().unwrap()
            },
        );
        assert!(got > 0);
    }

    #[cfg(unix)]
    #[test]
    fn the_helper_takes_no_signals() {
        let blocked = with_helper(
            |_: ()| unsafe {
                let mut cur: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut cur);
                [libc::SIGINT, libc::SIGTERM, libc::SIGALRM, libc::SIGUSR1]
                    .iter()
                    .all(|s| libc::sigismember(&cur, *s) == 1)
            },
            |a| {
                a.send(());
                a.recv().unwrap()
            },
        );
        assert!(blocked);
        // The caller's own mask is as it was.
        let caller_blocks_int = unsafe {
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut cur);
            libc::sigismember(&cur, libc::SIGINT) == 1
        };
        assert!(!caller_blocks_int);
    }
}
