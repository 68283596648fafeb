//! One consumer's live state: its file's fields, pending set, start queue,
//! read cursor, and the ack-floor rules.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use durabus_core::{subject, AckPolicy, ConsumerConfig, SequencePair};

use crate::replay::Cursor;
use crate::stream::Inner;

use super::file::ConsumerFile;
use super::journal::{self, Entry, Journal};
use super::pending::PendingSet;

/// A consumer's live state.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub(super) state: ConsumerFile,
    pub(super) pending: PendingSet,
    pub(super) start_queue: VecDeque<u64>,
    pub(super) last_active: Instant,
    pub(super) dirty: bool,
    /// Reads new messages (not persisted; rebuilt at `next_seq`).
    pub(super) cursor: Option<Cursor>,
    /// Fetches in progress (they keep the consumer active).
    pub(super) waiting: u32,
    /// `num_pending` of a filtered consumer, kept up to date incrementally.
    pub(super) pending_cache: Option<PendingCache>,
    /// Changes not yet folded into the state file.
    pub(super) journal: Journal,
}

/// Matching messages not yet delivered among `[base, last]`, valid while
/// `live` (the live messages in `[base, last]`) shows no removal.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingCache {
    pub(super) base: u64,
    pub(super) last: u64,
    pub(super) live: u64,
    pub(super) count: u64,
}

impl Consumer {
    pub(super) fn from_file(f: ConsumerFile) -> Consumer {
        let f_gen = f.journal_gen;
        let pending = f.pending.iter().copied().collect();
        let start_queue = f.start_queue.iter().copied().collect();
        Consumer {
            state: ConsumerFile {
                pending: Vec::new(),
                start_queue: Vec::new(),
                ..f
            },
            pending,
            start_queue,
            last_active: Instant::now(),
            dirty: false,
            cursor: None,
            pending_cache: None,
            waiting: 0,
            journal: Journal {
                gen: f_gen,
                ..Journal::default()
            },
        }
    }

    /// Encodes what changed since the last journal entry into the
    /// journal's buffer (nothing when nothing changed).
    pub(super) fn journal_entry(&mut self) {
        let mark = (
            self.state.delivered,
            self.state.ack_floor,
            self.state.next_seq,
            self.start_queue.len(),
        );
        let mut touched = std::mem::take(&mut self.pending.touched);
        if touched.is_empty() && self.journal.last == Some(mark) {
            return;
        }
        touched.sort_unstable();
        touched.dedup();
        let (mut upserts, mut removes) = (Vec::new(), Vec::new());
        for seq in touched {
            match self.pending.get(&seq) {
                Some(p) => upserts.push((seq, *p)),
                None => removes.push(seq),
            }
        }
        let queue_changed = self.journal.last.is_none_or(|l| l.3 != mark.3);
        let entry = Entry {
            delivered: mark.0,
            ack_floor: mark.1,
            next_seq: mark.2,
            upserts,
            removes,
            start_queue: queue_changed.then(|| self.start_queue.iter().copied().collect()),
        };
        self.journal.last = Some(mark);
        if self.journal.path.is_some() {
            journal::encode(&entry, &mut self.journal.buf);
        }
    }

    /// Applies a journal entry read back at open.
    pub(super) fn apply_entry(&mut self, e: Entry) {
        self.state.delivered = e.delivered;
        self.state.ack_floor = e.ack_floor;
        self.state.next_seq = e.next_seq;
        for (seq, p) in e.upserts {
            self.pending.insert(seq, p);
        }
        for seq in e.removes {
            self.pending.remove(&seq);
        }
        if let Some(q) = e.start_queue {
            self.start_queue = q.into();
        }
    }

    pub(super) fn to_file(&self) -> ConsumerFile {
        ConsumerFile {
            pending: self.pending.iter().map(|(s, p)| (*s, *p)).collect(),
            start_queue: self.start_queue.iter().copied().collect(),
            journal_gen: self.journal.gen,
            ..self.state.clone()
        }
    }

    pub(super) fn config(&self) -> &ConsumerConfig {
        &self.state.config
    }

    pub(super) fn acks(&self) -> bool {
        self.config().ack_policy != AckPolicy::None
    }

    pub(super) fn is_durable(&self) -> bool {
        self.config().durable_name.is_some()
    }

    /// The wait before redelivering after delivery number `count`.
    pub(super) fn wait_after(&self, count: u64) -> Duration {
        let cfg = self.config();
        match cfg.backoff.len() {
            0 => cfg.ack_wait,
            n => {
                let i = usize::try_from(count.saturating_sub(1))
                    .unwrap_or(usize::MAX)
                    .min(n - 1);
                cfg.backoff[i]
            }
        }
    }

    pub(super) fn ack_floor(&self) -> SequencePair {
        if self.acks() {
            self.state.ack_floor
        } else {
            self.state.delivered
        }
    }

    /// Moves the ack floor after delivery `cseq` of stream seq `seq` was
    /// settled (ack or term), as nats-server 2.9 does: to `delivered` when
    /// nothing is pending; else, when it was the delivery right above the
    /// floor, to it, then up to just below the next pending stream seq.
    pub(super) fn on_settled(&mut self, seq: u64, cseq: u64) {
        if self.pending.len() == 0 {
            self.state.ack_floor = self.state.delivered;
        } else if cseq == self.state.ack_floor.consumer_seq + 1 {
            self.state.ack_floor = SequencePair {
                consumer_seq: cseq,
                stream_seq: seq,
            };
            if let Some((ss, p)) = self.pending.first_above(seq) {
                self.state.ack_floor = SequencePair {
                    consumer_seq: p.cseq.saturating_sub(1),
                    stream_seq: ss.saturating_sub(1),
                };
            }
        }
    }

    pub(super) fn matches(&self, subj: &str) -> bool {
        let f = &self.config().filter_subjects;
        f.is_empty() || f.iter().any(|f| subject::matches(f, subj))
    }

    /// Drops pending entries whose message is gone (purge, delete, limits).
    pub(super) fn prune(&mut self, g: &Inner) {
        let before = self.pending.len();
        self.pending.retain(|s| g.is_live(s));
        self.start_queue.retain(|s| g.is_live(*s));
        if self.pending.len() != before {
            // As a purge moves nats-server's floor: past what vanished.
            self.state.ack_floor = match self.pending.iter().next() {
                None => self.state.delivered,
                Some((s, p)) => SequencePair {
                    consumer_seq: p.cseq.saturating_sub(1),
                    stream_seq: s.saturating_sub(1),
                },
            };
            self.dirty = true;
        }
    }
}
