//! Creating, updating, deleting and describing consumers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Instant;

use durabus_core::{
    subject, AckPolicy, ConfigError, ConsumerConfig, ConsumerInfo, DeliverPolicy, Error, Result,
    RetentionPolicy, SequencePair,
};

use crate::stream::{from_system_time, to_system_time, Inner};

use super::file::ConsumerFile;
use super::state::{Consumer, PendingCache};
use super::{consumer_not_found, StreamConsumers};

pub(super) fn filters_overlap(a: &[String], b: &[String]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    a.iter().any(|x| b.iter().any(|y| subject::overlaps(x, y)))
}

impl StreamConsumers {
    /// Where a new consumer starts: (next stream seq, last-per-subject queue).
    pub(super) fn start_of(&self, cfg: &ConsumerConfig) -> Result<(u64, VecDeque<u64>)> {
        if let DeliverPolicy::ByStartTime(t) = cfg.deliver_policy {
            return Ok((self.seq_for_time(from_system_time(t))?, VecDeque::new()));
        }
        let mut g = self.lock();
        let st = self.storage();
        let filters = &cfg.filter_subjects;
        let next_new = g.last_seq() + 1;
        Ok(match cfg.deliver_policy {
            DeliverPolicy::All => (g.first_seq().max(1), VecDeque::new()),
            DeliverPolicy::New => (next_new, VecDeque::new()),
            DeliverPolicy::ByStartSequence(n) => (n.max(1), VecDeque::new()),
            DeliverPolicy::Last if filters.is_empty() => {
                let s = if g.messages() > 0 {
                    g.last_seq()
                } else {
                    next_new
                };
                (s, VecDeque::new())
            }
            DeliverPolicy::Last => {
                let last = g.last_seqs_matching(st, filters)?.last().copied();
                (last.unwrap_or(next_new), VecDeque::new())
            }
            DeliverPolicy::LastPerSubject => (next_new, g.last_seqs_matching(st, filters)?.into()),
            DeliverPolicy::ByStartTime(_) => (next_new, VecDeque::new()),
        })
    }

    /// Checks a consumer against work-queue rules, with nats-server's
    /// messages. `except` is the consumer being updated.
    pub(super) fn check_work_queue(
        &self,
        map: &BTreeMap<String, Consumer>,
        cfg: &ConsumerConfig,
        except: Option<&str>,
    ) -> Result<()> {
        if self.retention() != RetentionPolicy::WorkQueue {
            return Ok(());
        }
        if cfg.ack_policy != AckPolicy::Explicit {
            return Err(Error::invalid_config(
                ConfigError::WorkQueueNeedsExplicitAck,
            ));
        }
        if cfg.deliver_policy != DeliverPolicy::All {
            return Err(Error::invalid_config(ConfigError::WorkQueueNeedsDeliverAll));
        }
        for (n, c) in map {
            if Some(n.as_str()) == except {
                continue;
            }
            if filters_overlap(&c.config().filter_subjects, &cfg.filter_subjects) {
                let unfiltered =
                    cfg.filter_subjects.is_empty() || c.config().filter_subjects.is_empty();
                return Err(Error::invalid_config(ConfigError::WorkQueueNotUnique {
                    unfiltered,
                }));
            }
        }
        Ok(())
    }

    /// Creates a consumer if absent (the caller validated the config).
    pub(crate) fn create_consumer(&self, cfg: ConsumerConfig) -> Result<ConsumerInfo> {
        let cfg = backoff_sets_ack_wait(cfg);
        let name = {
            // A durable consumer of that name is loaded first: an
            // idempotent create compares with its stored config.
            let mut map = match &cfg.durable_name {
                Some(n) => self.lock_with(n),
                None => self.consumers.lock(),
            };
            let name = match &cfg.durable_name {
                Some(n) => {
                    if let Some(reason) = self.consumers.broken().get(n) {
                        // Its file did not load: a new one would replace it.
                        return Err(self.unavailable_error(n, reason));
                    }
                    if let Some(c) = map.loaded.get_mut(n) {
                        if *c.config() == cfg {
                            c.last_active = Instant::now();
                            let n = n.clone();
                            drop(map);
                            return self.consumer_info(&n);
                        }
                        return Err(Error::ConsumerNameInUse {
                            stream: self.name.clone(),
                            name: n.clone(),
                        });
                    }
                    n.clone()
                }
                None => loop {
                    let n = self.consumers.ephemeral_name();
                    if !map.loaded.contains_key(&n) {
                        break n;
                    }
                },
            };
            self.check_work_queue(&map.loaded, &cfg, None)?;
            let (next_seq, start_queue) = self.start_of(&cfg)?;
            let first = start_queue.front().copied().unwrap_or(next_seq);
            let delivered = SequencePair {
                consumer_seq: 0,
                stream_seq: first.saturating_sub(1),
            };
            let mut c = Consumer::from_file(ConsumerFile {
                name: name.clone(),
                config: cfg,
                created_ns: self.now(),
                delivered,
                ack_floor: delivered,
                next_seq,
                start_queue: Vec::new(),
                pending: Vec::new(),
                journal_gen: 0,
            });
            c.start_queue = start_queue;
            map.loaded.insert(name.clone(), c);
            name
        };
        if self.consumers.ack_retention.load(Ordering::Acquire) {
            // The removals logged so far are durable before a consumer that
            // could claim the removed messages exists (invariant 21).
            self.sync_now();
        }
        if let Err(e) = self.persist_one(&name) {
            self.consumers.lock().loaded.remove(&name);
            return Err(e);
        }
        self.consumer_info(&name)
    }

    /// Changes a durable consumer (the caller validated the config).
    pub(crate) fn update_consumer(&self, cfg: ConsumerConfig) -> Result<ConsumerInfo> {
        let cfg = backoff_sets_ack_wait(cfg);
        let Some(name) = cfg.durable_name.clone() else {
            return Err(Error::invalid_config(ConfigError::UpdateNeedsDurableName));
        };
        {
            let mut map = self.lock_with(&name);
            let Some(c) = map.loaded.get_mut(&name) else {
                return Err(self.missing(&name));
            };
            cfg.validate_update(c.config())?;
            if cfg.filter_subjects != c.config().filter_subjects {
                self.check_work_queue(&map.loaded, &cfg, Some(&name))?;
            }
            let Some(c) = map.loaded.get_mut(&name) else {
                return Err(consumer_not_found(&self.name, &name));
            };
            c.state.config = cfg;
            c.cursor = None;
            c.pending_cache = None;
            c.dirty = true;
        }
        self.persist_one(&name)?;
        self.notify_consumers();
        self.consumer_info(&name)
    }

    /// Deletes a consumer and its file. One not loaded yet is not loaded:
    /// its name goes (under the map's lock, so no load can bring it back),
    /// then its files.
    pub(crate) fn delete_consumer(&self, name: &str) -> Result<()> {
        let _io = self.consumers.io();
        let (durable, was_broken) = {
            let mut map = self.lock_listed();
            // A consumer whose file could not be loaded: deleting it
            // removes the file, which lifts its hold on retention.
            let was_broken = self.persists() && self.consumers.broken().contains_key(name);
            let durable = match map.loaded.remove(name) {
                Some(c) => c.is_durable(),
                None if map.unloaded.remove(name) => true,
                None if was_broken => true,
                None => return Err(consumer_not_found(&self.name, name)),
            };
            (durable, was_broken)
        };
        if durable && self.persists() && !self.is_closed() {
            let st = self.storage();
            let path = self.consumer_dir().join(name);
            match st.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
            }
            st.sync_dir(&self.consumer_dir())
                .map_err(|e| Error::io(format!("syncing {}", self.consumer_dir().display()), e))?;
            // Its journal goes after its state file: a journal without one
            // is ignored at open.
            let journal = self.journal_dir().join(name);
            match st.remove_file(&journal) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", journal.display()), e)),
            }
        }
        if was_broken {
            self.consumers.broken().remove(name);
        }
        self.notify_consumers();
        // Messages only this consumer was holding may now go (interest).
        self.apply_retention();
        Ok(())
    }

    /// Wakes fetchers waiting on the stream (acks freed room, config changed).
    pub(super) fn notify_consumers(&self) {
        self.tail_tx.send_modify(|_| {});
    }

    pub(super) fn info_of(&self, g: &mut Inner, c: &mut Consumer) -> Result<ConsumerInfo> {
        c.prune(g);
        let num_pending = self.pending_count(g, c)?;
        Ok(ConsumerInfo {
            stream: self.name.clone(),
            name: c.state.name.clone(),
            config: c.config().clone(),
            created: to_system_time(c.state.created_ns),
            delivered: c.state.delivered,
            ack_floor: c.ack_floor(),
            num_pending,
            num_ack_pending: c.pending.len() as u64,
            num_redelivered: c.pending.values().filter(|p| p.count > 1).count() as u64,
            num_lost: g.lost_through(c.state.delivered.stream_seq),
        })
    }

    /// Messages matching the filter not delivered yet.
    pub(super) fn pending_count(&self, g: &mut Inner, c: &mut Consumer) -> Result<u64> {
        let from = c.state.next_seq.max(g.first_seq());
        let queued = c.start_queue.len() as u64;
        if from > g.last_seq() || g.messages() == 0 {
            return Ok(queued);
        }
        let filters = c.config().filter_subjects.clone();
        if filters.is_empty() {
            return Ok(queued + g.live_from(from));
        }
        if from == g.first_seq() {
            // Literal filters are counted from the subject table; a
            // wildcard needs the names, which the scan below reads.
            if let Some(n) = g.count_literal(&filters) {
                return Ok(queued + n);
            }
        }
        // A filtered consumer inside the stream: extend the cached count by
        // the appended tail when nothing at or above its base was removed
        // since; otherwise count once by a scan.
        let scan_from = match c.pending_cache {
            Some(pc) if g.live_from(pc.base) == pc.live + (g.last_seq() - pc.last) => {
                (pc.last + 1).max(from)
            }
            _ => {
                c.pending_cache = None;
                from
            }
        };
        let mut n = 0;
        if scan_from <= g.last_seq() {
            g.for_each_live(self.storage(), scan_from, &mut |r| {
                if filters.iter().any(|f| subject::matches(f, r.subject)) {
                    n += 1;
                }
                true
            })?;
        }
        let count = c.pending_cache.map_or(0, |pc| pc.count) + n;
        let base = from;
        c.pending_cache = Some(PendingCache {
            base,
            last: g.last_seq(),
            live: g.live_from(base),
            count,
        });
        Ok(queued + count)
    }

    /// A consumer's configuration and state.
    pub(crate) fn consumer_info(&self, name: &str) -> Result<ConsumerInfo> {
        let mut map = self.lock_with(name);
        let Some(c) = map.loaded.get_mut(name) else {
            return Err(self.missing(name));
        };
        let mut g = self.lock();
        self.info_of(&mut g, c)
    }

    /// Every consumer, ordered by name (all loaded first; one that does
    /// not load is left out, as `Store::unavailable` lists it).
    pub(crate) fn list_consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let mut map = self.lock_all();
        let mut g = self.lock();
        map.loaded
            .values_mut()
            .map(|c| self.info_of(&mut g, c))
            .collect()
    }
}

/// As nats-server: a backoff list sets `ack_wait` to its first step (which
/// is also what `in_progress` extends by).
fn backoff_sets_ack_wait(mut cfg: ConsumerConfig) -> ConsumerConfig {
    if let Some(first) = cfg.backoff.first() {
        cfg.ack_wait = *first;
    }
    cfg
}
