//! Msg-id de-duplication inside the duplicate window (invariant 9).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::HashMap;

use super::Stream;

/// Msg-id de-duplication inside the window (invariant 9).
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    pub(super) map: HashMap<Arc<str>, (u64, i64)>,
    pub(super) order: VecDeque<(i64, u64, Arc<str>)>,
}

impl Dedup {
    pub(crate) fn expire(&mut self, cutoff: i64) {
        while let Some((t, seq, _)) = self.order.front() {
            if *t >= cutoff {
                break;
            }
            let (seq, id) = (*seq, self.order.pop_front().map(|e| e.2));
            if let Some(id) = id {
                if self.map.get(&id).is_some_and(|(s, _)| *s == seq) {
                    self.map.remove(&id);
                }
            }
        }
    }

    /// Keeps only ids whose message is still stored. Used at open, so that
    /// the window is rebuilt from stored messages whether or not a checkpoint
    /// survived (invariant 8), as JetStream rebuilds it after a restart.
    pub(crate) fn retain(&mut self, live: impl Fn(u64) -> bool) {
        self.map.retain(|_, (seq, _)| live(*seq));
        self.order.retain(|(_, seq, _)| live(*seq));
    }

    pub(crate) fn insert(&mut self, id: &str, seq: u64, time: i64) {
        let id: Arc<str> = Arc::from(id);
        self.map.insert(id.clone(), (seq, time));
        self.order.push_back((time, seq, id));
    }
}

impl Stream {
    /// At open, after retention was re-derived: forgets the msg ids of
    /// messages no longer stored (invariant 9), as recovery does for the
    /// messages its own scan removed.
    pub(crate) fn forget_unstored_ids(&self) {
        let mut g = self.lock();
        let mut dedup = std::mem::take(&mut g.dedup);
        dedup.retain(|seq| g.is_live(seq));
        g.dedup = dedup;
    }
}
