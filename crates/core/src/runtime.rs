//! The one tokio runtime of a backend process: current-thread, created once,
//! driven only from the thread that calls [`block_on_interruptible`].

use std::future::Future;
use std::sync::OnceLock;
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
    fn a_panicking_check_abandons_the_future() {
        let r = std::panic::catch_unwind(|| {
            block_on_interruptible(std::future::pending::<()>(), &mut || panic!("cancel"))
        });
        assert!(r.is_err());
    }
}
