//! Settling deliveries: ack, nak, term and in-progress.

use std::time::Duration;

use durabus_core::{AckKind, AckPolicy, AckRef, Result, SequencePair};

use super::fetch::ns_after;
use super::StreamConsumers;

impl StreamConsumers {
    /// Settles a delivery. Unknown or already settled deliveries are a no-op.
    pub(crate) fn ack(&self, r: &AckRef, kind: AckKind) -> Result<()> {
        let mut removed: Vec<u64> = Vec::new();
        // Whether a waiting fetch may now get something: room under
        // max_ack_pending, or a redelivery due sooner.
        let wake;
        {
            let mut map = self.lock_with(&r.consumer);
            let Some(c) = map.loaded.get_mut(&*r.consumer) else {
                tracing::debug!(stream = %self.name, consumer = %r.consumer, "ack for an unknown consumer ignored");
                return Ok(());
            };
            let seq = r.stream_seq;
            let now = self.now();
            let current = c.pending.get(&seq).copied();
            let was_full = c
                .config()
                .max_ack_pending
                .is_some_and(|m| c.pending.len() as u64 >= m);
            match (kind, current) {
                (AckKind::Ack, _) if c.config().ack_policy == AckPolicy::All => {
                    // As nats-server: everything up to it, and the floor
                    // moves to it, unless it is at or below the floor.
                    let cseq = current.map_or(r.consumer_seq, |p| p.cseq);
                    let floor = c.state.ack_floor;
                    if seq > floor.stream_seq && cseq > floor.consumer_seq {
                        for s in c.pending.seqs_in(..=seq) {
                            c.pending.remove(&s);
                            removed.push(s);
                        }
                        c.state.ack_floor = SequencePair {
                            consumer_seq: cseq,
                            stream_seq: seq,
                        };
                    }
                }
                (AckKind::Ack | AckKind::Term, None) => {
                    tracing::debug!(stream = %self.name, consumer = %r.consumer, seq, "ack of a settled delivery ignored");
                    if c.pending.len() == 0 {
                        c.state.ack_floor = c.state.delivered;
                    }
                }
                (AckKind::Nak(_) | AckKind::InProgress, None) => {
                    tracing::debug!(stream = %self.name, consumer = %r.consumer, seq, "nak/in-progress of a settled delivery ignored");
                }
                (AckKind::Ack | AckKind::Term, Some(p)) => {
                    // A terminated message is settled for retention too, and
                    // moves the floor like an ack (as nats-server).
                    c.pending.remove(&seq);
                    removed.push(seq);
                    c.on_settled(seq, p.cseq);
                }
                (AckKind::Nak(_) | AckKind::InProgress, Some(p)) if p.cseq != r.consumer_seq => {
                    tracing::debug!(stream = %self.name, consumer = %r.consumer, seq, "nak/in-progress of an older delivery ignored");
                }
                (AckKind::Nak(delay), Some(p)) => {
                    let wait = match delay {
                        Some(d) => d,
                        None if !c.config().backoff.is_empty() => c.wait_after(p.count),
                        None => Duration::ZERO,
                    };
                    c.pending.set_deadline(seq, ns_after(now, wait));
                }
                (AckKind::InProgress, Some(p)) if p.deadline_ns <= now => {
                    // As nats-server: its ack wait already ran out, so it
                    // is due for redelivery; a late in-progress does not
                    // take that back.
                    tracing::debug!(stream = %self.name, consumer = %r.consumer, seq, "in-progress after the ack wait ran out ignored");
                }
                (AckKind::InProgress, Some(_)) => {
                    let wait = c.config().ack_wait;
                    c.pending.set_deadline(seq, ns_after(now, wait));
                }
            }
            c.dirty = true;
            wake = c.waiting > 0
                && (matches!(kind, AckKind::Nak(_)) || (was_full && !removed.is_empty()));
        }
        if wake {
            self.notify_consumers();
        }
        self.retain_settled(&removed);
        Ok(())
    }

    /// [`StreamConsumers::ack`] for a consumer that must exist, as a confirmed ack
    /// on NATS (nobody answers for a deleted consumer).
    /// Returns once the ack is recorded: written to the consumer's journal,
    /// and fsynced under `always` (invariant 18).
    pub(crate) fn ack_confirmed(&self, r: &AckRef, kind: AckKind) -> Result<()> {
        if !self
            .lock_with(&r.consumer)
            .loaded
            .contains_key(&*r.consumer)
        {
            return Err(self.missing(&r.consumer));
        }
        self.ack(r, kind)?;
        let mut map = self.consumers.lock();
        match map.loaded.get_mut(&*r.consumer) {
            Some(c) if c.is_durable() => self.flush_journal(c),
            _ => Ok(()),
        }
    }
}
