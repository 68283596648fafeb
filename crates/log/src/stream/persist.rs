//! The checkpoint of a stream's state, writing it, and shutdown.

use durabus_core::{Error, Result};

use crate::checkpoint::{Checkpoint, SegCkpt, CHECKPOINT_FILE};
use crate::segment::{self, SegmentMeta};

use super::state::Inner;
use super::{io_err, Stream};

impl Inner {
    pub(super) fn checkpoint(&self) -> Checkpoint {
        let seg = |s: &SegmentMeta, size: u64| SegCkpt {
            base: s.base,
            size,
            msgs: s.msgs,
            bytes: s.bytes,
            last_seq: s.last_seq,
            first_time: s.first_time,
            last_time: s.last_time,
        };
        let mut segments: Vec<SegCkpt> = self.sealed.iter().map(|s| seg(s, s.size)).collect();
        segments.push(seg(&self.active, self.flushed));
        Checkpoint {
            covered_base: self.active.base,
            covered_offset: self.flushed,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            last_time: self.last_time,
            messages: self.messages,
            bytes: self.bytes,
            segments,
            covered_index: self.active.index.clone(),
            deleted: self.deleted.ranges().collect(),
            subjects: self.subjects.to_ckpt(),
            dedup: self
                .dedup
                .order
                .iter()
                .filter(|(_, seq, id)| self.dedup.map.get(id).is_some_and(|(s, _)| s == seq))
                .map(|(t, seq, id)| (id.to_string(), *seq, *t))
                .collect(),
        }
    }
}

impl Stream {
    /// Writes missing index files of sealed segments, fsyncs, then writes the
    /// checkpoint. Index and checkpoint are derived state: failures are logged.
    pub(crate) fn write_checkpoint(&self) -> Result<()> {
        let _one = self.ckpt_lock.lock().unwrap_or_else(|e| e.into_inner());
        let storage = self.storage();
        if storage.is_read_only() {
            // Read-only stores write no derived files.
            return Ok(());
        }
        let (ckpt, file, to_index) = {
            let mut g = self.lock();
            if g.poisoned.is_some() {
                return Ok(());
            }
            // The checkpoint's state must not count records it does not cover.
            g.flush_for_read()?;
            let to_index: Vec<(u64, Vec<segment::IndexEntry>)> = g
                .sealed
                .iter()
                .filter(|s| !s.indexed)
                .map(|s| (s.base, s.index.clone()))
                .collect();
            g.ckpt_at = g.appended;
            (g.checkpoint(), g.active.file.clone(), to_index)
        };
        // Encoded outside the lock: a table of millions of subjects takes
        // a while.
        let bytes = ckpt
            .encode()
            .map_err(|e| Error::internal(format!("encoding checkpoint: {e}")))?;
        drop(ckpt);
        self.lock().ckpt_len = bytes.len() as u64;
        let segdir = self.dir.join("segments");
        for (base, index) in &to_index {
            match segment::write_index(storage, &segdir, *base, index) {
                // Its index leaves memory (read again on demand).
                Ok(()) => self.lock().index_written(*base),
                Err(e) => {
                    tracing::warn!(stream = %self.name, base, error = %e, "could not write segment index; it will be rebuilt")
                }
            }
        }
        // IMPORTANT: the data a checkpoint covers is durable before the checkpoint.
        if let Some(f) = file {
            if let Err(e) = f.sync_data() {
                let mut g = self.lock();
                return Err(g.poison(&self.name, format!("fsync failed: {e}")));
            }
        }
        crate::storage::write_atomic(storage, &self.dir.join(CHECKPOINT_FILE), &bytes).map_err(
            io_err(format!("writing checkpoint of stream {}", self.name)),
        )
    }

    /// Flushes, fsyncs and checkpoints (close and drop).
    pub(crate) fn shutdown(&self) -> Result<()> {
        {
            let mut g = self.lock();
            let _ = g.flush(&self.name);
            g.closing = true;
        }
        let r = if self.env.volatile() || self.storage().is_read_only() {
            Ok(())
        } else {
            self.sync_now();
            {
                let mut g = self.lock();
                if g.poisoned.is_none() {
                    if let Err(e) = g.trim_active() {
                        tracing::warn!(stream = %self.name, error = %e, "cutting the zeros ahead of the records failed");
                    }
                }
            }
            // Its fsync makes the cut durable too. The checkpoint itself is
            // derived: when the data was fsynced (the stream is not
            // poisoned) a checkpoint that cannot be written (a full disk) is
            // a warning, not a failed close; the next open scans instead.
            match self.write_checkpoint() {
                Err(e) if self.lock().poisoned.is_none() => {
                    tracing::warn!(stream = %self.name, error = %e,
                        "close: checkpoint not written (the data is durable; the next open scans the segments)");
                    Ok(())
                }
                r => r,
            }
        };
        self.mark_closed();
        r
    }
}
