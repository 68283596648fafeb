//! Fetching deliveries: due redeliveries first, then new messages read
//! through the consumer's own cursor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use durabus_core::{AckRef, Delivery, Error, Result, StoredMessage};

use crate::replay::{Cursor, Progress};

use super::file::Pending;
use super::state::Consumer;
use super::StreamConsumers;

/// Counts a fetch in progress on a consumer for as long as it lives (also
/// when its future is dropped), then marks the consumer active.
pub(super) struct Waiting<'a> {
    stream: &'a StreamConsumers,
    consumer: &'a str,
}

impl<'a> Waiting<'a> {
    pub(super) fn new(stream: &'a StreamConsumers, consumer: &'a str) -> Waiting<'a> {
        if let Some(c) = stream.lock_with(consumer).loaded.get_mut(consumer) {
            c.waiting += 1;
        }
        Waiting { stream, consumer }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.stream.consumers.lock().loaded.get_mut(self.consumer) {
            c.waiting = c.waiting.saturating_sub(1);
            c.last_active = Instant::now();
        }
    }
}

pub(super) fn ns_after(now: i64, d: Duration) -> i64 {
    now.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl StreamConsumers {
    /// Up to `batch` deliveries now; with the unix ns of the next redelivery
    /// due (to wake a waiting fetch).
    pub(super) fn fetch_now(
        &self,
        name: &str,
        batch: usize,
    ) -> Result<(Vec<Delivery>, Option<i64>)> {
        let mut map = self.lock_with(name);
        let Some(c) = map.loaded.get_mut(name) else {
            return Err(self.missing(name));
        };
        c.last_active = Instant::now();
        let now = self.now();
        {
            let g = self.lock();
            c.prune(&g);
        }
        let mut out: Vec<Delivery> =
            Vec::with_capacity(batch.min(durabus_core::FETCH_PREALLOCATED));
        let names: (Arc<str>, Arc<str>) = (Arc::from(self.name.as_str()), Arc::from(name));
        let mut new_after: Vec<bool> = Vec::new();
        // 1. Redeliveries that are due, in stream-seq order.
        let due = c.pending.due(now);
        for seq in due {
            if out.len() >= batch {
                break;
            }
            let Some(p) = c.pending.get(&seq).copied() else {
                continue;
            };
            if c.config().max_deliver.is_some_and(|m| p.count >= m) {
                // Invariant 20: max_deliver reached, it is never delivered
                // again and leaves pending (as nats-server 2.9).
                c.pending.remove(&seq);
                c.dirty = true;
                continue;
            }
            let msg = match self.get(seq) {
                Ok(m) => m,
                Err(Error::MessageNotFound { .. }) => {
                    c.pending.remove(&seq);
                    c.dirty = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            c.state.delivered.consumer_seq += 1;
            let count = p.count + 1;
            let cseq = c.state.delivered.consumer_seq;
            let deadline_ns = ns_after(now, c.wait_after(count));
            c.pending.insert(
                seq,
                Pending {
                    cseq,
                    count,
                    deadline_ns,
                },
            );
            c.dirty = true;
            out.push(Self::delivery(&names, msg, cseq, count));
            new_after.push(false);
        }
        // 2. New messages, while max_ack_pending leaves room.
        let room = |c: &Consumer| -> usize {
            match c.config().max_ack_pending {
                Some(m) if c.acks() => {
                    usize::try_from(m.saturating_sub(c.pending.len() as u64)).unwrap_or(usize::MAX)
                }
                _ => usize::MAX,
            }
        };
        let want = (batch - out.len()).min(room(c));
        let mut fresh: Vec<StoredMessage> = Vec::new();
        while fresh.len() < want {
            let Some(seq) = c.start_queue.pop_front() else {
                break;
            };
            c.dirty = true;
            match self.get(seq) {
                Ok(m) => fresh.push(m),
                Err(Error::MessageNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if fresh.len() < want {
            // Invariant 11: read through the consumer's own cursor, holding
            // the stream lock only to plan each chunk.
            let stale = c
                .cursor
                .as_ref()
                .is_some_and(|cur| cur.next_seq < c.state.next_seq && cur.queue.is_empty());
            if stale {
                c.cursor = None;
            }
            let filters = c.config().filter_subjects.clone();
            let from = c.state.next_seq;
            let cur = c.cursor.get_or_insert_with(|| Cursor::new(from, filters));
            let mut got: Vec<StoredMessage> = Vec::new();
            let mut caught_up = false;
            while !caught_up && fresh.len() + got.len() < want {
                let before = got.len();
                while fresh.len() + got.len() < want {
                    if let Some(m) = cur.queue.pop_front() {
                        if m.seq >= from {
                            got.push(m);
                        }
                        continue;
                    }
                    match cur.fill(self)? {
                        // A damaged record: skipped like a deleted message.
                        Progress::More | Progress::Lost(_) => {}
                        Progress::CaughtUp => {
                            caught_up = true;
                            break;
                        }
                    }
                }
                if got.len() > before {
                    // Drop what was deleted or expired since it was read.
                    let g = self.lock();
                    let mut i = 0;
                    got.retain(|m| {
                        i += 1;
                        i <= before || g.is_live(m.seq)
                    });
                }
            }
            let scanned = cur.queue.is_empty().then_some(cur.next_seq);
            fresh.extend(got);
            if let Some(n) = scanned {
                if n > c.state.next_seq {
                    // Everything below `n` was read: skip it next time. As
                    // nats-server, `delivered` counts the skipped ones.
                    c.state.next_seq = n;
                    c.state.delivered.stream_seq = c.state.delivered.stream_seq.max(n - 1);
                    c.dirty = true;
                }
            }
        }
        for m in fresh {
            if let Some(pc) = &mut c.pending_cache {
                if m.seq >= pc.base && m.seq <= pc.last {
                    pc.count = pc.count.saturating_sub(1);
                }
            }
            c.state.delivered.consumer_seq += 1;
            let cseq = c.state.delivered.consumer_seq;
            c.state.delivered.stream_seq = c.state.delivered.stream_seq.max(m.seq);
            c.state.next_seq = c.state.next_seq.max(m.seq + 1);
            if c.acks() {
                let deadline_ns = ns_after(now, c.wait_after(1));
                c.pending.insert(
                    m.seq,
                    Pending {
                        cseq,
                        count: 1,
                        deadline_ns,
                    },
                );
            }
            c.dirty = true;
            out.push(Self::delivery(&names, m, cseq, 1));
            new_after.push(true);
        }
        // Delivery.pending: matching messages not delivered after each one.
        if !out.is_empty() {
            let mut g = self.lock();
            let mut left = self.pending_count(&mut g, c)?;
            for (d, fresh) in out.iter_mut().zip(new_after).rev() {
                d.pending = left;
                if fresh {
                    left += 1;
                }
            }
        }
        let next_due = c.pending.next_due();
        if c.is_durable() {
            // Invariant 18: a delivery is recorded before it is handed out.
            self.flush_journal(c)?;
        } else {
            c.pending.touched.clear();
        }
        let settled: Vec<u64> = if c.acks() {
            Vec::new()
        } else {
            out.iter().map(|d| d.stream_seq()).collect()
        };
        drop(map);
        // Ack policy none: delivered means acknowledged.
        self.retain_settled(&settled);
        Ok((out, next_due))
    }

    /// A delivery of `message`; `names` are the stream's and consumer's.
    pub(super) fn delivery(
        names: &(Arc<str>, Arc<str>),
        message: StoredMessage,
        cseq: u64,
        count: u64,
    ) -> Delivery {
        Delivery {
            ack: AckRef {
                stream: names.0.clone(),
                consumer: names.1.clone(),
                stream_seq: message.seq,
                consumer_seq: cseq,
                delivered: count,
                token: None,
            },
            message,
            pending: 0,
        }
    }

    /// Up to `batch` deliveries, waiting up to `expires` for the first.
    pub(crate) async fn fetch(
        &self,
        consumer: &str,
        batch: usize,
        expires: Duration,
    ) -> Result<Vec<Delivery>> {
        let until = tokio::time::Instant::now() + expires;
        let mut rx = self.tail_tx.subscribe();
        // A waiting fetch is activity: the consumer is not inactive meanwhile.
        let _waiting = Waiting::new(self, consumer);
        loop {
            if self.is_closed() {
                return Err(Error::StreamNotFound {
                    name: self.name.clone(),
                });
            }
            rx.borrow_and_update();
            let (out, next_due) = self.fetch_now(consumer, batch)?;
            if !out.is_empty() || batch == 0 {
                return Ok(out);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return Ok(out);
            }
            let wake = match next_due {
                Some(d) => {
                    let in_ns = u64::try_from(d.saturating_sub(self.now())).unwrap_or(0);
                    (now + Duration::from_nanos(in_ns)).min(until)
                }
                None => until,
            };
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        tokio::time::sleep_until(wake).await;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}
