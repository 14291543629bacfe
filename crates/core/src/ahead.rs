//! Pure work on a helper thread while the caller's thread does its own:
//! the merge cleans one page of landing rows (phone numbers, emails, keys)
//! while the backend's main thread reads the next page and writes the
//! previous one to Postgres. The helper runs only the `work` function it is
//! given, which must not touch Postgres; it takes no signals (they are the
//! main thread's: cancel, statement_timeout, latch wake-ups).

use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

/// The caller's end: pages go in with [`Ahead::send`] and come back, in
/// order, worked, with [`Ahead::recv`].
pub struct Ahead<I, O> {
    tx: Option<SyncSender<I>>,
    rx: Receiver<O>,
    back: Sender<O>,
    in_flight: usize,
}

impl<I, O> Ahead<I, O> {
    /// Hand a page to the helper; waits while it still holds one not yet
    /// started (at most two pages are ever out of the caller's hands).
    pub fn send(&mut self, page: I) {
        let tx = self.tx.as_ref().expect("the helper thread is running");
        if tx.send(page).is_err() {
            panic!("the helper thread stopped");
        }
        self.in_flight += 1;
    }

    /// The next worked page, waiting for it; None when none is out.
    pub fn recv(&mut self) -> Option<O> {
        if self.in_flight == 0 {
            return None;
        }
        let out = self.rx.recv().expect("the helper thread stopped");
        self.in_flight -= 1;
        Some(out)
    }

    /// Hand a worked page back for the helper to free: its allocations are
    /// the helper's, and freeing them there (a page's many small strings
    /// and maps) keeps the caller's thread on its own work.
    pub fn give_back(&mut self, page: O) {
        // The helper is gone only when the caller is unwinding: drop here.
        let _ = self.back.send(page);
    }

    /// Pages handed over and not yet taken back.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// Run `body` with a helper thread that applies `work` to every page the
/// body sends. The helper ends with the body (also when the body panics: a
/// Postgres ERROR unwinds through here, and the helper is joined first).
pub fn with_helper<I, O, R>(
    work: impl Fn(I) -> O + Send + Sync,
    body: impl FnOnce(&mut Ahead<I, O>) -> R,
) -> R
where
    I: Send,
    O: Send,
{
    std::thread::scope(|scope| {
        let (tx, work_rx) = sync_channel::<I>(1);
        let (out_tx, rx) = sync_channel::<O>(1);
        let (back, back_rx) = channel::<O>();
        let work = &work;
        without_signals(|| {
            scope.spawn(move || {
                for page in work_rx {
                    // Pages given back are freed before the next is worked.
                    back_rx.try_iter().for_each(drop);
                    if out_tx.send(work(page)).is_err() {
                        break;
                    }
                }
                back_rx.try_iter().for_each(drop);
            })
        });
        let mut ahead = Ahead {
            tx: Some(tx),
            rx,
            back,
            in_flight: 0,
        };
        let out = body(&mut ahead);
        // Closing the page channel ends the helper's loop.
        ahead.tx = None;
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
    fn a_panicking_helper_fails_the_caller() {
        let r = std::panic::catch_unwind(|| {
            with_helper(
                |x: u32| if x == 3 { panic!("bad page") } else { x },
                |a| {
                    let mut sum = 0;
                    for x in 0..6 {
                        a.send(x);
                        sum += a.recv().unwrap();
                    }
                    sum
                },
            )
        });
        assert!(r.is_err());
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
