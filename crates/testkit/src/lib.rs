//! Test helpers for durabus, useful in applications' tests too.
//!
//! - [`temp_url`], [`temp_bus`]: a file-backed store in a fresh temp dir.
//! - [`Rng`]: a tiny seeded generator, so randomized tests print a seed that
//!   reproduces them.
//! - [`crash`]: the kill -9 harness. A child process (the `crash_publisher`
//!   binary of this crate) publishes and prints every ack; the harness
//!   SIGKILLs it at a random moment, reopens the data directory and checks
//!   that everything acknowledged is there exactly once, in order.
//! - [`nats`]: real `nats-server` processes: [`nats::NatsServer`] (file or
//!   memory JetStream, none, auth, TLS with generated certificates; kill,
//!   pause, restart) and [`nats::NatsCluster`] (a JetStream cluster).
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> durabus::Result<()> {
//! let (bus, _dir) = durabus_testkit::temp_bus("always").await?;
//! bus.create_stream(durabus::StreamConfig::new("T").subjects(["t.>"])).await?;
//! # Ok(()) }
//! ```

use std::path::Path;

use durabus::Bus;
use tempfile::TempDir;

pub mod crash;
pub mod nats;

/// A fresh temporary directory, removed when dropped.
///
/// # Panics
/// If the OS cannot create one (a test cannot proceed without it).
pub fn temp_dir() -> TempDir {
    match tempfile::Builder::new().prefix("durabus-test-").tempdir() {
        Ok(d) => d,
        Err(e) => panic!("cannot create a temp dir: {e}"),
    }
}

/// The `file:` URL of data directory `dir` with `durability`
/// (`always`, `none` or `periodic:<duration>`).
pub fn file_url(dir: &Path, durability: &str) -> String {
    format!("file:{}?durability={durability}", dir.display())
}

/// A temp dir and the `file:` URL of a store inside it. Keep the [`TempDir`]
/// alive as long as the store is used.
pub fn temp_url(durability: &str) -> (TempDir, String) {
    let dir = temp_dir();
    let url = file_url(dir.path(), durability);
    (dir, url)
}

/// A connected file-backed bus in a fresh temp dir. Close the bus before
/// dropping the [`TempDir`].
pub async fn temp_bus(durability: &str) -> durabus::Result<(Bus, TempDir)> {
    let (dir, url) = temp_url(durability);
    let bus = durabus::connect(&url).await?;
    Ok((bus, dir))
}

/// A small, fast, seeded pseudo-random generator (SplitMix64).
///
/// Not for cryptography. Deterministic for a seed, so a failing randomized
/// test reports its seed and can be re-run exactly.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A seed from the clock and the process id, for runs that were not
    /// given one.
    pub fn seed_from_clock() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut r = Rng::new(nanos ^ (u64::from(std::process::id()) << 32));
        r.next_u64()
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// Reads a count from environment variable `name`, or `default` when unset.
///
/// # Panics
/// If the variable is set but not a number, naming it.
pub fn env_count(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse() {
            Ok(n) => n,
            Err(_) => panic!("{name}={v:?} is not a number"),
        },
        Err(_) => default,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_for_a_seed() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut r = Rng::new(7);
        assert!((0..1000).all(|_| r.below(10) < 10));
    }

    #[test]
    fn file_url_carries_durability() {
        let url = file_url(Path::new("/tmp/x"), "always");
        assert_eq!(url, "file:/tmp/x?durability=always");
    }
}
