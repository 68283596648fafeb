//! The one confirmation every destructive verb asks before it changes
//! anything: `stream rm`, `stream purge`, `stream rmm`, `consumer rm`,
//! `kv rm` and `dlq redrive`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{bail, Context as _};

/// Asks "`what`? [y/N]" on the terminal, unless `force` (`--force`, `-f`);
/// without a terminal to ask on, `--force` is required.
pub(crate) fn confirm(force: bool, what: &str) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("refusing to {what} without confirmation; pass --force");
    }
    eprint!("{what}? [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("cannot read the confirmation")?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        bail!("cancelled; nothing was changed")
    }
}
