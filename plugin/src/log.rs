//! Logging for the plugin: the `log` crate, lines on stderr and optionally appended to a file.
//!
//! stdout belongs to the protocol (results and errors), so logs never go there. Runtimes copy a
//! plugin's stderr into their own log; the default level is `warn` so a healthy node stays quiet.
//! Line format: `2024-05-01T12:00:00.123Z metaguard[4242] WARN ADD mgnet:abc:eth0: message`.
//!
//! A log file that cannot be opened is reported on stderr and otherwise ignored: logging is not
//! enforcement, and refusing DEL because of a log file would leave rules and records behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

struct State {
    file: Option<File>,
    /// Command and attachment key, so every line says what it is about.
    context: String,
}

static STATE: Mutex<State> = Mutex::new(State {
    file: None,
    context: String::new(),
});

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Ok(mut st) = STATE.lock() else { return };
        let ctx = if st.context.is_empty() {
            String::new()
        } else {
            format!("{} ", st.context)
        };
        let line = format!(
            "{} metaguard[{}] {} {}{}\n",
            timestamp(SystemTime::now()),
            std::process::id(),
            record.level(),
            ctx,
            record.args()
        );
        // Nothing sensible to do when stderr or the log file is gone; never panic over a log line.
        let _ = std::io::stderr().write_all(line.as_bytes());
        if let Some(f) = st.file.as_mut() {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger at `warn` (before the configuration is known). Safe to call twice.
pub fn init() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// Applies the configured level and log file.
pub fn configure(level: log::LevelFilter, file: Option<&Path>) {
    log::set_max_level(level);
    let Some(path) = file else { return };
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => {
            if let Ok(mut st) = STATE.lock() {
                st.file = Some(f);
            }
        }
        Err(e) => log::warn!(
            "cannot open logFile {}: {e}; logging to stderr only",
            path.display()
        ),
    }
}

/// Sets the prefix that says which command and attachment a line is about.
pub fn set_context(ctx: String) {
    if let Ok(mut st) = STATE.lock() {
        st.context = ctx;
    }
}

/// RFC 3339 UTC with milliseconds (`humantime`: no dependencies of its own, the same formatter
/// the proxy's logs use).
fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(1_714_564_799)),
            "2024-05-01T11:59:59.000Z"
        );
    }
}
