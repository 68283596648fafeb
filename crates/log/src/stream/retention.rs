//! Removing messages: limits, max_age, purge and delete, and config updates
//! that re-apply the limits.

use std::sync::Arc;

use durabus_core::{subject, ArgumentError, Error, PurgeRequest, Result, StreamConfig};

use crate::record;
use crate::storage::Storage;

use super::state::Inner;
use super::subjects::Key;
use super::time::dur_ns;
use super::Stream;

impl Inner {
    /// Removes the stored message `seq` (its subject and record size given)
    /// with a delete record, written to the OS before the removal
    /// (invariant 10). A poisoned stream refuses; a failed write poisons it
    /// (invariant 5) and the message stays: the delete is not done.
    pub(crate) fn delete_logged(
        &mut self,
        stream: &str,
        seq: u64,
        subject: &str,
        size: u64,
        now: i64,
    ) -> Result<()> {
        if let Some(e) = self.poison_error(stream) {
            return Err(e);
        }
        let time = now.max(self.last_time);
        self.active.size += record::encode_delete(&mut self.pending, seq, time) as u64;
        self.flush(stream)?;
        self.remove_msg(seq, subject, size);
        Ok(())
    }

    /// Removes messages older than `max_age`.
    pub(super) fn expire(&mut self, stream: &str, storage: &dyn Storage, now: i64) -> Result<u64> {
        let Some(age) = self.config.max_age else {
            return Ok(0);
        };
        let cutoff = now.saturating_sub(dur_ns(age));
        let mut n = 0;
        while let Some(t) = self.head_time(stream, storage)? {
            if t >= cutoff || !self.evict_head(stream, storage)? {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Evicts the oldest messages until every count and byte limit holds
    /// (discard `old`, and re-application after recovery or an update).
    pub(super) fn enforce_limits(&mut self, stream: &str, storage: &dyn Storage) -> Result<()> {
        if let Some(max) = self.config.max_msgs {
            while self.messages > max {
                if !self.evict_head(stream, storage)? {
                    break;
                }
            }
        }
        if let Some(max) = self.config.max_bytes {
            while self.bytes > max {
                if !self.evict_head(stream, storage)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Evicts the oldest messages of `subject` beyond `max_msgs_per_subject`.
    pub(super) fn enforce_subject_limit(
        &mut self,
        stream: &str,
        storage: &dyn Storage,
        subject: &str,
    ) -> Result<()> {
        let k = self.subjects.key(subject);
        self.enforce_key_limit(stream, storage, k)
    }

    fn enforce_key_limit(&mut self, stream: &str, storage: &dyn Storage, k: Key) -> Result<()> {
        let Some(max) = self.config.max_msgs_per_subject else {
            return Ok(());
        };
        while self.subjects.count(k) > max {
            let Some(oldest) = self.subjects.oldest(k) else {
                return Ok(());
            };
            if oldest == self.first_seq {
                self.evict_head(stream, storage)?;
            } else {
                let (subject, size) = self.read_info(stream, storage, oldest)?;
                self.remove_msg(oldest, &subject, size);
            }
        }
        Ok(())
    }

    /// Re-applies every limit (after recovery or an update).
    pub(super) fn enforce_all(
        &mut self,
        stream: &str,
        storage: &dyn Storage,
        now: i64,
    ) -> Result<()> {
        if let Some(max) = self.config.max_msgs_per_subject {
            for k in self.subjects.over(max) {
                self.enforce_key_limit(stream, storage, k)?;
            }
        }
        self.enforce_limits(stream, storage)?;
        self.expire(stream, storage, now)?;
        Ok(())
    }

    /// Applies a purge record (live and in recovery alike): removes messages
    /// below `bound`, matching `filter` when non-empty, keeping the newest
    /// `keep` of those. Returns how many were removed.
    pub(super) fn apply_purge(
        &mut self,
        stream: &str,
        storage: &dyn Storage,
        filter: &str,
        bound: u64,
        keep: u64,
    ) -> Result<u64> {
        if filter.is_empty() {
            let before = self.messages;
            if bound > self.last_seq && keep == 0 {
                self.clear_all();
            } else {
                while self.messages > 0 && self.first_seq < bound {
                    if !self.evict_head(stream, storage)? {
                        break;
                    }
                }
            }
            return Ok(before - self.messages);
        }
        let literal = (bound > self.last_seq)
            .then(|| self.count_literal(&[filter.to_owned()]))
            .flatten();
        let total = if let Some(n) = literal {
            n
        } else {
            let mut n = 0;
            self.for_each_live(storage, 0, &mut |r| {
                if r.seq >= bound {
                    return false;
                }
                if subject::matches(filter, r.subject) {
                    n += 1;
                }
                true
            })?;
            n
        };
        let to_remove = total.saturating_sub(keep);
        if to_remove == 0 {
            return Ok(0);
        }
        let mut hits: Vec<(u64, String, u64)> = Vec::new();
        self.for_each_live(storage, 0, &mut |r| {
            if r.seq >= bound || hits.len() as u64 >= to_remove {
                return false;
            }
            if subject::matches(filter, r.subject) {
                hits.push((r.seq, r.subject.to_owned(), r.size as u64));
            }
            true
        })?;
        let n = hits.len() as u64;
        for (seq, subj, size) in hits {
            self.remove_msg(seq, &subj, size);
        }
        Ok(n)
    }

    pub(super) fn clear_all(&mut self) {
        self.messages = 0;
        self.bytes = 0;
        self.subjects.clear();
        self.deleted.clear();
        for s in self.sealed.iter_mut() {
            s.msgs = 0;
            s.bytes = 0;
        }
        self.active.msgs = 0;
        self.active.bytes = 0;
        self.first_seq = self.last_seq + 1;
        self.head_cache = None;
        self.drop_dead_segments();
    }

    /// The sequence below which purging leaves exactly `keep` messages.
    pub(super) fn keep_bound(&self, keep: u64) -> u64 {
        if keep >= self.messages {
            return self.first_seq;
        }
        // Walk down from the top, skipping deleted sequences.
        let mut t = self.last_seq + 1;
        let mut need = keep;
        while need > 0 {
            let lo = t.saturating_sub(need).max(self.first_seq);
            let d = self.deleted.count_in(lo, t - 1);
            need = need - (t - lo) + d;
            t = lo;
            if t <= self.first_seq {
                break;
            }
        }
        t
    }
}

impl Stream {
    /// Expires by age (the background timer).
    pub(crate) fn expire_now(&self) {
        let mut g = self.lock();
        if g.config.max_age.is_none() || g.poisoned.is_some() || self.is_closed() {
            return;
        }
        match g.expire(&self.name, self.storage(), self.now()) {
            Ok(n) if n > 0 => self.notify(&g),
            Ok(_) => {}
            Err(e) => tracing::warn!(stream = %self.name, error = %e, "max_age expiry failed"),
        }
        self.after_change(&mut g);
    }

    /// Changes limits and options (the caller validated the config).
    /// `on_config` sees the new config before it applies (under the lock).
    pub(crate) fn update(
        &self,
        config: StreamConfig,
        on_config: impl FnOnce(&StreamConfig),
    ) -> Result<()> {
        let mut g = self.lock();
        if let Some(e) = g.poison_error(&self.name) {
            return Err(e);
        }
        let storage = self.storage();
        let track = config.max_msgs_per_subject.is_some();
        on_config(&config);
        g.config = config;
        if track && !g.subjects.is_tracking() {
            g.rebuild_subject_seqs(storage)?;
        } else if !track {
            g.subjects.stop_tracking();
        }
        g.enforce_all(&self.name, storage, self.now())?;
        // Evictions are not logged (rule 7); a checkpoint records them.
        g.ckpt_needed = true;
        self.notify(&g);
        self.after_change(&mut g);
        Ok(())
    }

    pub(crate) async fn purge(self: &Arc<Self>, req: &PurgeRequest) -> Result<u64> {
        if req.keep.is_some() && req.up_to_seq.is_some() {
            return Err(Error::invalid_argument(ArgumentError::PurgeKeepAndSequence));
        }
        if let Some(f) = &req.subject {
            subject::validate_filter(f)?;
        }
        let (n, gen) = {
            let mut g = self.lock();
            if let Some(e) = g.poison_error(&self.name) {
                return Err(e);
            }
            if g.config.deny_purge {
                return Err(Error::Denied {
                    stream: self.name.clone(),
                    operation: "purge",
                });
            }
            let storage = self.storage();
            let time = self.now().max(g.last_time);
            let top = g.last_seq + 1;
            let bound_of = |up: Option<u64>| up.map_or(top, |u| u.min(top));
            let (filter, bound, keep) = match &req.subject {
                Some(f) => (f.as_str(), bound_of(req.up_to_seq), req.keep.unwrap_or(0)),
                None => {
                    let b = match req.keep {
                        Some(k) => g.keep_bound(k),
                        None => bound_of(req.up_to_seq),
                    };
                    ("", b, 0)
                }
            };
            if filter.is_empty() && (bound <= g.first_seq || g.messages == 0) {
                return Ok(0);
            }
            // Invariant 10: the purge is logged before it is acknowledged.
            g.active.size += record::encode_purge(&mut g.pending, bound, time, filter, keep) as u64;
            g.flush(&self.name)?;
            let n = g.apply_purge(&self.name, storage, filter, bound, keep)?;
            g.ckpt_needed |= n > 0;
            self.notify(&g);
            self.after_change(&mut g);
            (n, g.write_gen)
        };
        self.wait_durable(gen).await?;
        Ok(n)
    }

    pub(crate) async fn delete_message(self: &Arc<Self>, seq: u64) -> Result<()> {
        let gen = {
            let mut g = self.lock();
            if let Some(e) = g.poison_error(&self.name) {
                return Err(e);
            }
            if g.config.deny_delete {
                return Err(Error::Denied {
                    stream: self.name.clone(),
                    operation: "delete",
                });
            }
            if !g.is_live(seq) {
                return Err(self.not_found(seq));
            }
            let storage = self.storage();
            let (subject, size) = g.read_info(&self.name, storage, seq)?;
            g.delete_logged(&self.name, seq, &subject, size, self.now())?;
            self.notify(&g);
            self.after_change(&mut g);
            g.write_gen
        };
        self.wait_durable(gen).await
    }
}
