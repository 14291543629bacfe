//! How a stream's run starts: full or incremental, from which watermark,
//! and from the checkpoint of an interrupted run of the same kind.

use crate::catalog::{self, Checkpoint};

pub struct Plan {
    /// Where an incremental run starts; None for a full run.
    pub watermark: Option<String>,
    pub mode: &'static str,
    pub run_id: i64,
    /// Epoch microseconds.
    pub started_us: i64,
    /// The position of an interrupted run of the same mode and watermark.
    pub resume: Option<Checkpoint>,
}

pub fn plan(source: &str, stream: &str, full_refresh: bool) -> Plan {
    let stored = catalog::load_watermark(source, stream);
    let checkpoint = catalog::load_checkpoint(source, stream);
    // A full refresh that was interrupted is still one: resume it, rather
    // than falling back to an incremental run.
    let watermark = if full_refresh || checkpoint.as_ref().is_some_and(|c| c.mode == "full") {
        None
    } else {
        stored
    };
    let mode = if watermark.is_some() {
        "incremental"
    } else {
        "full"
    };
    let resume = checkpoint.filter(|c| c.mode == mode && c.watermark == watermark);
    Plan {
        watermark,
        mode,
        run_id: catalog::next_run_id(),
        started_us: catalog::now_us(),
        resume,
    }
}

impl Plan {
    /// When the run began: an interrupted run's start when this one
    /// resumes it (its first rows were read then).
    pub fn began_us(&self) -> i64 {
        self.resume
            .as_ref()
            .map_or(self.started_us, |c| c.started_at_us.min(self.started_us))
    }
}
