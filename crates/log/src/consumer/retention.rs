//! Interest and work-queue retention (invariant 21): removing messages no
//! consumer needs any more.

use std::collections::BTreeMap;
use std::sync::MutexGuard;

use durabus_core::RetentionPolicy;

use crate::stream::Inner;

use super::state::Consumer;
use super::{ConsumerMap, StreamConsumers};

impl StreamConsumers {
    /// Interest and work-queue retention (invariant 21): removes stored
    /// messages every interested consumer has acknowledged.
    pub(crate) fn apply_retention(&self) {
        if !self.consumers.retains_on_ack() {
            return;
        }
        let retention = self.retention();
        if retention == RetentionPolicy::Limits {
            return;
        }
        let map = self.consumers.lock();
        if !map.unloaded.is_empty() {
            // Cannot happen (these retentions load every consumer); a
            // consumer not loaded may still need any message.
            return;
        }
        let mut g = self.lock();
        if g.messages() == 0 || (map.loaded.is_empty() && retention == RetentionPolicy::WorkQueue) {
            // A work queue without consumers keeps everything.
            return;
        }
        // A message goes once no consumer still needs it (`still_needs`:
        // its filter matches and the message is at or above its position,
        // pending, or queued). Every live message is looked at, not only
        // those below the lowest position: above it sit messages no
        // consumer's filter matches (interest drops them at publish) and
        // messages a consumer further ahead settled.
        let views: Vec<&Consumer> = map.loaded.values().collect();
        let first = g.first_seq();
        let mut doomed: Vec<(u64, String, u64, bool)> = Vec::new();
        let res = g.for_each_live(self.storage(), first, &mut |r| {
            let needed = views.iter().any(|c| Self::still_needs(c, r.seq, r.subject));
            let interested = views.iter().any(|c| c.matches(r.subject));
            if !needed && (interested || retention == RetentionPolicy::Interest) {
                doomed.push((r.seq, r.subject.to_owned(), r.size as u64, interested));
            }
            true
        });
        if let Err(e) = res {
            tracing::warn!(stream = %self.name, error = %e, "retention scan failed");
            return;
        }
        for (seq, subj, size, interested) in doomed {
            if interested {
                g.remove_msg(seq, &subj, size);
            } else {
                self.log_unmatched_removal(&mut g, seq, &subj, size);
            }
        }
        // Settlements are not logged (rule 7); a checkpoint records them.
        g.request_checkpoint();
        drop(map);
        self.finish_change(&mut g);
    }

    /// Whether consumer `c` may still deliver stream seq `seq` on `subj`.
    pub(super) fn still_needs(c: &Consumer, seq: u64, subj: &str) -> bool {
        c.matches(subj)
            && (seq >= c.state.next_seq
                || c.pending.contains_key(&seq)
                || c.start_queue.contains(&seq))
    }

    /// Retention after acks (invariant 21): removes each of `seqs` that no
    /// consumer still needs. Costs one read per sequence, not a scan.
    pub(crate) fn retain_settled(&self, seqs: &[u64]) {
        if seqs.is_empty() || !self.consumers.retains_on_ack() {
            return;
        }
        let map = self.consumers.lock();
        if !map.unloaded.is_empty() {
            return;
        }
        let mut g = self.lock();
        let mut changed = false;
        for &seq in seqs {
            if !g.is_live(seq) {
                continue;
            }
            let (subj, size) = match g.read_info(&self.name, self.storage(), seq) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(stream = %self.name, seq, error = %e, "retention: could not read message");
                    continue;
                }
            };
            if !map
                .loaded
                .values()
                .any(|c| Self::still_needs(c, seq, &subj))
            {
                g.remove_msg(seq, &subj, size);
                changed = true;
            }
        }
        drop(map);
        if changed {
            g.request_checkpoint();
            self.finish_change(&mut g);
        }
    }

    /// For a batch publish on an interest stream: the consumer map, taken
    /// before the stream lock (lock order), so each message no consumer's
    /// filter matches can be dropped right after its append
    /// ([`StreamConsumers::drop_unmatched`]). `None` for other retentions.
    pub(crate) fn interest_consumers(&self) -> Option<MutexGuard<'_, ConsumerMap>> {
        if !self.consumers.retains_on_ack() || self.retention() != RetentionPolicy::Interest {
            return None;
        }
        Some(self.consumers.lock()).filter(|map| map.unloaded.is_empty())
    }

    /// Interest retention inside a batch, under the stream lock: drops
    /// `seq` at once when no consumer's filter matches `subj`, so the
    /// batch's later messages meet the limits (max_msgs, discard new) as a
    /// sequence of single publishes would, never evicting a wanted message
    /// for one that is about to go.
    pub(crate) fn drop_unmatched(
        &self,
        map: &BTreeMap<String, Consumer>,
        g: &mut Inner,
        seq: u64,
        subj: &str,
    ) {
        if !g.is_live(seq) || map.values().any(|c| c.matches(subj)) {
            return;
        }
        match g.read_info(&self.name, self.storage(), seq) {
            Ok((subj, size)) => self.log_unmatched_removal(g, seq, &subj, size),
            Err(e) => {
                tracing::warn!(stream = %self.name, seq, error = %e, "retention: could not read message")
            }
        }
    }

    /// Interest retention after a publish: a message no consumer's filter
    /// matches is not kept (as nats-server).
    pub(crate) fn retain_published(&self, seq: u64, subj: &str) {
        if !self.consumers.retains_on_ack() {
            return;
        }
        let map = self.consumers.lock();
        if !map.unloaded.is_empty() {
            return;
        }
        let mut g = self.lock();
        if g.retention() != RetentionPolicy::Interest
            || !g.is_live(seq)
            || map.loaded.values().any(|c| c.matches(subj))
        {
            return;
        }
        drop(map);
        match g.read_info(&self.name, self.storage(), seq) {
            Ok((subj, size)) => {
                self.log_unmatched_removal(&mut g, seq, &subj, size);
                self.finish_change(&mut g);
            }
            Err(e) => {
                tracing::warn!(stream = %self.name, seq, error = %e, "retention: could not read message")
            }
        }
    }

    /// Removes a message no consumer's filter matches, with a delete
    /// record: unlike a settlement, no consumer file could re-derive it at
    /// open, and a consumer created later would receive it again after a
    /// crash (invariant 21).
    /// A failed write poisons the stream and the message stays.
    pub(super) fn log_unmatched_removal(&self, g: &mut Inner, seq: u64, subj: &str, size: u64) {
        if self.storage().is_read_only() {
            // Read-only: removed in memory, as a writable open would; the
            // delete record is that open's to write.
            g.remove_msg(seq, subj, size);
            return;
        }
        match g.delete_logged(&self.name, seq, subj, size, self.now()) {
            Ok(()) => g.request_checkpoint(),
            Err(e) => {
                tracing::warn!(stream = %self.name, seq, error = %e, "retention: could not log the removal")
            }
        }
    }
}
