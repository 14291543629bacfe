//! The one tokio runtime of a backend process: current-thread, created once,
//! driven only from the thread that calls [`block_on_interruptible`].

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::Duration;

use tokio::runtime::Runtime;

/// How often a blocked call wakes up to let Postgres process a cancel or a
/// statement timeout.
pub const INTERRUPT_POLL: Duration = Duration::from_millis(100);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .expect("tokio current-thread runtime")
    })
}

/// Drive `fut` to completion, calling `check` at least every
/// [`INTERRUPT_POLL`] while it is pending. `check` may unwind (Postgres raises
/// an ERROR for a cancel); the future is then dropped and its connections closed.
pub fn block_on_interruptible<F: Future>(fut: F, check: &mut dyn FnMut()) -> F::Output {
    let rt = runtime();
    let mut fut = std::pin::pin!(fut);
    loop {
        check();
        if let Ok(out) =
            rt.block_on(async { tokio::time::timeout(INTERRUPT_POLL, fut.as_mut()).await })
        {
            return out;
        }
    }
}

/// How many times [`kick`] lets the runtime's tasks run.
const KICK_ROUNDS: usize = 4;

/// Start `fut` without waiting for it: poll it and let the runtime's other
/// tasks (the HTTP connection drivers) run a few rounds, enough to put a
/// request on the wire so that the server prepares the answer while this
/// thread writes the previous page to Postgres. Returns the output if the
/// future finished meanwhile; otherwise finish it later with
/// [`block_on_interruptible`].
pub fn kick<F: Future + ?Sized>(mut fut: Pin<&mut F>) -> Option<F::Output> {
    runtime().block_on(async {
        for _ in 0..KICK_ROUNDS {
            let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
            if let Poll::Ready(out) = polled {
                return Some(out);
            }
            tokio::task::yield_now().await;
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_runs_while_a_future_waits() {
        let mut checks = 0;
        let out = block_on_interruptible(
            async {
                tokio::time::sleep(Duration::from_millis(350)).await;
                7
            },
            &mut || checks += 1,
        );
        assert_eq!(out, 7);
        assert!(checks >= 3, "checked {checks} times in 350 ms");
    }

    #[test]
    fn kick_starts_work_that_finishes_later() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = started.clone();
        let mut fut = Box::pin(async move {
            s2.store(true, std::sync::atomic::Ordering::SeqCst);
            rx.await.unwrap()
        });
        assert_eq!(kick(fut.as_mut()), None);
        assert!(
            started.load(std::sync::atomic::Ordering::SeqCst),
            "kick polled the future"
        );
        tx.send(5).unwrap();
        assert_eq!(block_on_interruptible(fut.as_mut(), &mut || {}), 5);
        let mut done = Box::pin(async { 9 });
        assert_eq!(kick(done.as_mut()), Some(9));
    }

    #[test]
    fn a_panicking_check_abandons_the_future() {
        let r = std::panic::catch_unwind(|| {
            block_on_interruptible(std::future::pending::<()>(), &mut || panic!("cancel"))
        });
        assert!(r.is_err());
    }
}
