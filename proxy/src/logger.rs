//! Operational log (not the decision log): plain lines on stderr, `TIMESTAMP LEVEL message`.

use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct StderrLogger {
    level: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!(
            "{} {:<5} {}\n",
            crate::decision_log::rfc3339_now(),
            r.level(),
            r.args()
        );
        // One write per line so lines from several threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger once; later calls only change the level.
pub fn init(level: LevelFilter) {
    let _ = log::set_boxed_logger(Box::new(StderrLogger {
        level: LevelFilter::Trace,
    }));
    log::set_max_level(level);
}
