//! Background work of a store: the group-commit syncer (invariant 4) and the
//! maintenance queue (checkpoints after segments are sealed or removed).
//!
//! Publishers under `Durability::Always` append under the stream lock, then
//! wait on the stream's durable watermark. The syncer thread takes every
//! stream that asked, runs one fdatasync per stream, and advances the
//! watermark to the write generation captured before that fsync started, so
//! every publisher whose write came before it shares it.
//!
//! This module knows nothing of streams: it queues anything that can run a
//! group commit ([`GroupSync`]), which the stream implements.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// What the syncer thread can fsync: a stream, as seen from here.
pub(crate) trait GroupSync: Send + Sync {
    /// Runs one group commit (gather, fdatasync, advance the watermark).
    fn group_sync(&self);
}

/// Queues shared by the store, its streams and its threads.
#[derive(Debug, Default)]
pub(crate) struct Background {
    state: Mutex<BgState>,
    sync_cv: Condvar,
    maint_cv: Condvar,
}

#[derive(Default)]
struct BgState {
    sync_queue: Vec<Arc<dyn GroupSync>>,
    ckpt_queue: Vec<String>,
    shutdown: bool,
}

/// What the maintenance thread should do next.
#[derive(Debug)]
pub(crate) enum MaintWork {
    /// Write checkpoints of these streams, then run timers.
    Tick(Vec<String>),
    Shutdown,
}

impl std::fmt::Debug for BgState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgState")
            .field("sync_queue", &self.sync_queue.len())
            .field("ckpt_queue", &self.ckpt_queue)
            .field("shutdown", &self.shutdown)
            .finish()
    }
}

impl Background {
    fn lock(&self) -> MutexGuard<'_, BgState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the syncer to fsync `stream` (the caller set its `sync_requested`).
    pub(crate) fn request_sync(&self, stream: Arc<dyn GroupSync>) {
        let mut s = self.lock();
        s.sync_queue.push(stream);
        drop(s);
        self.sync_cv.notify_one();
    }

    /// Asks the maintenance thread to write `stream`'s checkpoint.
    pub(crate) fn request_checkpoint(&self, stream: &str) {
        let mut s = self.lock();
        if !s.ckpt_queue.iter().any(|n| n == stream) {
            s.ckpt_queue.push(stream.to_owned());
        }
        drop(s);
        self.maint_cv.notify_one();
    }

    /// Stops both threads (after the syncer drained its queue).
    pub(crate) fn shutdown(&self) {
        self.lock().shutdown = true;
        self.sync_cv.notify_all();
        self.maint_cv.notify_all();
    }

    /// The syncer thread's loop.
    pub(crate) fn run_syncer(&self) {
        loop {
            let batch = {
                let mut s = self.lock();
                while s.sync_queue.is_empty() && !s.shutdown {
                    s = self.sync_cv.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                if s.sync_queue.is_empty() {
                    return;
                }
                std::mem::take(&mut s.sync_queue)
            };
            let mut seen: Vec<*const ()> = Vec::with_capacity(batch.len());
            for stream in batch {
                let p = Arc::as_ptr(&stream).cast::<()>();
                if seen.contains(&p) {
                    continue;
                }
                seen.push(p);
                stream.group_sync();
            }
        }
    }

    /// Waits up to `tick` for maintenance work.
    pub(crate) fn next_maint(&self, tick: Duration) -> MaintWork {
        let mut s = self.lock();
        if s.ckpt_queue.is_empty() && !s.shutdown {
            s = self
                .maint_cv
                .wait_timeout(s, tick)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        if s.shutdown {
            return MaintWork::Shutdown;
        }
        MaintWork::Tick(std::mem::take(&mut s.ckpt_queue))
    }
}
