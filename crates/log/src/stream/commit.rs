//! Writes to the OS and group commit (invariants 3 and 4): the pending
//! buffer's single write, preallocation, the durable watermark and the
//! syncer's gather-then-fsync.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use durabus_core::Result;

use crate::sync::GroupSync;
use crate::Durability;

use super::state::Inner;
use super::Stream;

/// The group-commit watermark: every write generation up to `gen` is durable.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Durable {
    pub(super) gen: u64,
    pub(super) failed: bool,
}

/// Group commit's gather step. When an fsync ends, the publishers it
/// acknowledged plus those already waiting for the next one are how many are
/// publishing at once. The next fsync waits for that many, or for as long as
/// the last fsync took (at most [`GATHER_MAX`]), whichever comes first:
/// otherwise the publishers it woke miss the next fsync, which starts at once
/// with those already waiting, and the group splits into two halves that take
/// turns, each fsync carrying half of them.
#[derive(Debug, Default)]
pub(super) struct Gather {
    /// Publish calls since the syncer last captured a write generation.
    calls: usize,
    /// Calls the next fsync waits for.
    target: usize,
    /// Until when it waits for them; `None`: it does not wait.
    until: Option<Instant>,
    /// The syncer is waiting on `Stream::gathered`.
    waiting: bool,
}

/// Zeros kept written ahead of the records under `Always`.
pub(super) const PREALLOC: u64 = 1 << 20;

/// Upper bound of the gather wait.
pub(super) const GATHER_MAX: Duration = Duration::from_micros(500);

impl Inner {
    /// Writes pending records to the OS: one write call (invariant 3).
    pub(super) fn flush(&mut self, stream: &str) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Some(e) = self.poison_error(stream) {
            return Err(e);
        }
        let Some(file) = self.active.file.clone() else {
            return Err(self.poison(stream, "the active segment has no open file".into()));
        };
        match file.write_all_at(&self.pending, self.flushed) {
            Ok(()) => {
                self.flushed += self.pending.len() as u64;
                self.pending.clear();
                if self.pending.capacity() > 8 * 1024 * 1024 {
                    self.pending = Vec::with_capacity(64 * 1024);
                }
                self.write_gen += 1;
                self.dirty = true;
                Ok(())
            }
            Err(e) => {
                let cause = format!("write to {} failed: {e}", self.active.path.display());
                Err(self.poison(stream, cause))
            }
        }
    }

    /// Under `Always`, keeps [`PREALLOC`] bytes of zeros written ahead of the
    /// records in the active segment (at most to the segment size), so the
    /// group commit's fdatasync overwrites allocated blocks and leaves the
    /// file size alone: it need not write the inode too (measured: about 40%
    /// more fsyncs per second on ext4). Recovery reads zeros after the last
    /// record as the end of the log; a segment is cut to its records when it
    /// is sealed or closed. A failed write here only means no preallocation.
    pub(super) fn preallocate(&mut self, segment_size: u64) {
        let from = self.zeroed.max(self.flushed);
        if self.closing || from >= self.flushed + PREALLOC / 4 {
            return;
        }
        let to = (from + PREALLOC).min(segment_size.max(self.flushed));
        let Some(file) = self.active.file.clone() else {
            return;
        };
        if to <= from {
            return;
        }
        let zeros = vec![0u8; (to - from) as usize];
        match file.write_all_at(&zeros, from) {
            Ok(()) => self.zeroed = to,
            Err(e) => tracing::debug!(error = %e, "preallocating the active segment failed"),
        }
    }

    /// Cuts the active segment's file to its records (zeros written ahead of
    /// them by [`Inner::preallocate`], perhaps by an earlier session, go).
    /// The caller fsyncs.
    pub(super) fn trim_active(&mut self) -> std::io::Result<()> {
        let Some(file) = self.active.file.clone() else {
            return Ok(());
        };
        if self.zeroed > self.flushed || file.len()? > self.flushed {
            file.set_len(self.flushed)?;
        }
        self.zeroed = 0;
        Ok(())
    }

    /// Writes records still pending (deferred by group commit) so that readers,
    /// which read files, see every stored message.
    pub(super) fn flush_for_read(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let name = self.config.name.clone();
        self.flush(&name)
    }
}

impl Stream {
    /// Waits until write generation `gen` is durable (`Always` only):
    /// group commit (invariant 4) by the store's syncer thread.
    /// Whether single publishes leave their write to the group-commit syncer.
    pub(super) fn defers_writes(&self) -> bool {
        self.env.durability == Durability::Always && !self.env.volatile()
    }

    pub(super) async fn wait_durable(self: &Arc<Self>, gen: u64) -> Result<()> {
        if self.env.durability != Durability::Always || self.env.volatile() {
            return Ok(());
        }
        let mut rx = self.durable_tx.subscribe();
        {
            let d = *rx.borrow();
            if d.gen >= gen {
                return Ok(());
            }
            if d.failed {
                return Err(self.poisoned_now());
            }
        }
        if !self.sync_requested.swap(true, Ordering::AcqRel) {
            self.env.bg.request_sync(self.clone());
        }
        let durable =
            matches!(rx.wait_for(|d| d.gen >= gen || d.failed).await, Ok(ref d) if d.gen >= gen);
        if durable {
            Ok(())
        } else {
            Err(self.poisoned_now())
        }
    }

    /// Counts a publish call that will wait for the group commit, and wakes
    /// the syncer if it completes the group being gathered.
    pub(super) fn count_call(&self, g: &mut Inner) {
        if !self.defers_writes() {
            return;
        }
        g.gather.calls += 1;
        if g.gather.waiting && g.gather.calls >= g.gather.target {
            self.gathered.notify_one();
        }
    }

    /// The syncer's group commit: gathers the publishers the last fsync woke
    /// (see [`Gather`]), then syncs.
    pub(super) fn gather_and_sync(&self) {
        let mut g = self.lock();
        if let Some(until) = g.gather.until.take() {
            while g.gather.calls < g.gather.target && g.poisoned.is_none() && !self.is_closed() {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                g.gather.waiting = true;
                g = self
                    .gathered
                    .wait_timeout(g, until - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
                g.gather.waiting = false;
            }
        }
        drop(g);
        self.sync_now();
    }

    /// fsyncs everything written so far and advances the watermark; a failure
    /// poisons the stream (invariant 5).
    pub(crate) fn sync_now(&self) {
        self.sync_requested.store(false, Ordering::Release);
        let (file, gen, grouped) = {
            let mut g = self.lock();
            if g.poisoned.is_some() {
                drop(g);
                self.durable_tx.send_modify(|d| d.failed = true);
                return;
            }
            if let Err(e) = g.flush(&self.name) {
                tracing::debug!(stream = %self.name, error = %e, "group write failed");
                drop(g);
                self.durable_tx.send_modify(|d| d.failed = true);
                return;
            }
            let grouped = std::mem::take(&mut g.gather.calls);
            if self.defers_writes() {
                g.preallocate(self.env.segment_size);
            }
            if !g.dirty {
                let gen = g.write_gen;
                drop(g);
                self.advance_durable(gen);
                return;
            }
            g.dirty = false;
            (g.active.file.clone(), g.write_gen, grouped)
        };
        if let Some(f) = file {
            let started = Instant::now();
            let synced = f.sync_data();
            if synced.is_ok() && grouped > 0 {
                // Set before the waiters wake, so their calls count towards it.
                let mut g = self.lock();
                g.gather.target = grouped + g.gather.calls;
                g.gather.until = Some(Instant::now() + started.elapsed().min(GATHER_MAX));
            }
            if let Err(e) = synced {
                let mut g = self.lock();
                let cause = format!("fsync failed: {e}");
                let _ = g.poison(&self.name, cause);
                drop(g);
                self.durable_tx.send_modify(|d| d.failed = true);
                return;
            }
        }
        self.advance_durable(gen);
    }

    pub(super) fn advance_durable(&self, gen: u64) {
        self.durable_tx.send_if_modified(|d| {
            if gen > d.gen {
                d.gen = gen;
                true
            } else {
                false
            }
        });
    }

    /// Whether anything was written since the last sync.
    pub(crate) fn is_dirty(&self) -> bool {
        self.lock().dirty
    }
}

impl GroupSync for Stream {
    fn group_sync(&self) {
        self.gather_and_sync();
    }
}
