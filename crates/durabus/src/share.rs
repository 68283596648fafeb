//! A `file:` store shared with other local processes.
//!
//! Only one process opens a data directory (it holds the lock). With
//! sharing on (`file:DIR?share=true`, [`crate::ConnectOptions::share`]; the
//! `durabus` CLI turns it on), that process also serves the store with the
//! hub on a loopback port, and records the port and a fresh random token in
//! `DIR/share.json`, readable by its owner only. A process with sharing on
//! that then finds the directory locked reads the record and connects there with the NATS
//! backend: the same [`crate::Bus`] API, the same store. Only the user who
//! can read the record (the store's owner) can use the store this way.
//!
//! Why a loopback port and not a Unix socket: async-nats, the client the
//! NATS backend is built on, connects over TCP only; the token in an
//! owner-only file gives the port the access rule a socket file with
//! owner-only permissions would have.
//!
//! A record whose holder is gone (killed) is stale: the next process that
//! takes the lock removes it, opens the store and shares it anew.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use durabus_core::{Backend, Error, Result};
use serde::{Deserialize, Serialize};

/// The record of a shared store, in its data directory.
pub const SHARE_FILE: &str = "share.json";

/// How long a process that finds a store locked waits for the holder's
/// record to appear (the holder writes it just after taking the lock).
const RECORD_WAIT: Duration = Duration::from_millis(500);

/// What `share.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// `nats://127.0.0.1:<port>`.
    url: String,
    /// The token the hub asks for.
    token: String,
    /// The holder's pid, for people reading the file.
    pid: u32,
}

/// A store being shared. [`Sharing::stop`] (called by
/// [`crate::Bus::close`]) removes the record and stops serving; dropping it
/// removes the record, and the hub stops with it.
pub(crate) struct Sharing {
    record: PathBuf,
    server: tokio::sync::Mutex<Option<durabus_server::Server>>,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl Sharing {
    /// Serves `backend`, the store opened in `dir` (this process holds its
    /// lock), and writes the record.
    pub(crate) async fn start(backend: Arc<dyn Backend>, dir: &Path) -> Result<Sharing> {
        let token = format!("{:032x}", rand::random::<u128>());
        let options = durabus_server::ServerOptions::default()
            .name("durabus-share")
            .auth_token(token.clone());
        let server = durabus_server::Server::bind(backend, "127.0.0.1:0", options)
            .await
            .map_err(|e| Error::io("listening on a loopback port to share the store", e))?;
        let record = Record {
            url: server.url(),
            token,
            pid: std::process::id(),
        };
        let path = dir.join(SHARE_FILE);
        let body = serde_json::to_vec(&record)
            .map_err(|e| Error::internal(format!("encoding {SHARE_FILE}: {e}")))?;
        write_private(&path, &body)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        tracing::debug!(url = %record.url, dir = %dir.display(), "sharing the store");
        Ok(Sharing {
            record: path,
            server: tokio::sync::Mutex::new(Some(server)),
        })
    }

    /// Removes the record (no one new joins), then stops serving: every
    /// connection finishes what it had read.
    pub(crate) async fn stop(&self) {
        let server = self.server.lock().await.take();
        if let Some(server) = server {
            let _ = std::fs::remove_file(&self.record);
            server.shutdown().await;
        }
    }
}

impl Drop for Sharing {
    fn drop(&mut self) {
        if self.server.get_mut().is_some() {
            let _ = std::fs::remove_file(&self.record);
        }
    }
}

/// Removes the record of a holder that is gone: the caller holds the
/// store's lock, so no live process serves it.
pub(crate) fn remove_stale(dir: &Path) {
    let path = dir.join(SHARE_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "removed the record of a share whose process is gone")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a stale share record")
        }
    }
}

/// Where and how to join the store in `dir`, if its holder shares it:
/// the hub's URL and token. Waits up to [`RECORD_WAIT`] for a holder that
/// has just taken the lock to write it.
pub(crate) async fn find(dir: &Path) -> Option<(String, String)> {
    let path = dir.join(SHARE_FILE);
    let deadline = tokio::time::Instant::now() + RECORD_WAIT;
    loop {
        match std::fs::read(&path) {
            Ok(body) => {
                let record: Record = serde_json::from_slice(&body).ok()?;
                return Some((record.url, record.token));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `data` to `path` through a temporary file and a rename, readable
/// and writable by the owner only.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
