//! Progress bars on stderr, in one style: `pub --count` counts messages;
//! `verify`, `dump` and `repair` count bytes of segment files. A bar is
//! drawn only when stderr is a terminal; anywhere else (a file, a pipe,
//! the tests) it is hidden and nothing is printed. Nothing goes to stdout.

use std::io::{self, IsTerminal as _, Write};
use std::sync::Mutex;

use durabus::embedded::Progress;
use indicatif::{ProgressBar, ProgressFinish, ProgressStyle, WeakProgressBar};

/// What a bar counts.
pub(crate) enum Unit {
    Messages,
    Bytes,
}

/// The bar drawn last: log lines are written around it ([`LogWriter`]).
static SHOWN: Mutex<Option<WeakProgressBar>> = Mutex::new(None);

/// A bar of `len` units on stderr, hidden unless `show` and stderr is a
/// terminal. Dropped unfinished (a command failing), it clears itself, so
/// the error is printed on a clean line.
pub(crate) fn bar(len: u64, unit: Unit, show: bool) -> ProgressBar {
    if !show || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let template = match unit {
        Unit::Messages => "[{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}",
        Unit::Bytes => "[{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    };
    let bar = ProgressBar::new(len).with_finish(ProgressFinish::AndClear);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    *SHOWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.downgrade());
    bar
}

/// Moves `bar` to where the engine's report says a read of the store is.
pub(crate) fn show(bar: &ProgressBar, p: Progress) {
    // Setting the length draws the bar: only when it changes.
    if bar.length() != Some(p.total) {
        bar.set_length(p.total);
    }
    bar.set_position(p.done);
}

/// Stderr for log lines: while a bar is drawn, each line is written with
/// the bar cleared and drawn again below it, not through it.
pub(crate) struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shown = SHOWN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(WeakProgressBar::upgrade)
            .filter(|b| !b.is_finished());
        match shown {
            Some(bar) => bar.suspend(|| io::stderr().write(buf)),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
