//! Operational log (not the decision log): plain lines on stderr, `TIMESTAMP LEVEL message`,
//! written by env_logger (one `write` per line, so lines from several threads do not interleave).

use log::LevelFilter;
use std::io::Write;

/// Installs the logger once; later calls only change the level. `RUST_LOG` is not read: the
/// level comes from the configuration (`log_level`) or `--log-level`.
pub fn init(level: LevelFilter) {
    let _ = builder(env_logger::Target::Stderr).try_init();
    log::set_max_level(level);
}

/// Every level passes the logger itself; `log::set_max_level` filters.
fn builder(target: env_logger::Target) -> env_logger::Builder {
    let mut b = env_logger::Builder::new();
    b.target(target)
        .filter_level(LevelFilter::Trace)
        .format(|buf, r| {
            writeln!(
                buf,
                "{} {:<5} {}",
                crate::http1::fmt::rfc3339_now(),
                r.level(),
                r.args()
            )
        });
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The line docs/proxy.md and the end-to-end tests read: `TIMESTAMP LEVEL message`, the
    /// timestamp RFC 3339 in UTC with milliseconds, the level padded to five columns.
    #[test]
    fn lines_are_timestamp_level_message() {
        let sink = Sink::default();
        let logger = builder(env_logger::Target::Pipe(Box::new(sink.clone()))).build();
        for (level, msg) in [
            (log::Level::Info, "pod records: 2 addresses loaded"),
            (log::Level::Error, "policy reload failed: line 6"),
        ] {
            logger.log(
                &log::Record::builder()
                    .level(level)
                    .args(format_args!("{msg}"))
                    .build(),
            );
        }
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        for (line, want) in lines.iter().zip([
            " INFO  pod records: 2 addresses loaded",
            " ERROR policy reload failed: line 6",
        ]) {
            let (ts, rest) = line.split_at(24);
            assert_eq!(rest, want, "{line}");
            // 2026-01-02T03:04:05.678Z
            assert!(
                ts.len() == 24 && &ts[4..5] == "-" && &ts[10..11] == "T" && ts.ends_with('Z'),
                "{line}"
            );
        }
    }
}
