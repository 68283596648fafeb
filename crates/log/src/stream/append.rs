//! Publishing: checks, encoding into the pending buffer, segment rolls,
//! and the acks of single and batch publishes.

use std::sync::Arc;

use durabus_core::{
    ArgumentError, DiscardPolicy, Error, Message, PublishAck, Result, NATS_EXPECTED_LAST_SEQUENCE,
    NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_EXPECTED_STREAM, NATS_MSG_ID, NATS_ROLLUP,
};

use crate::record;
use crate::segment::{self, SegmentMeta, SEGMENT_HEADER};
use crate::storage::StorageFile;

use super::state::Inner;
use super::time::dur_ns;
use super::Stream;

/// Under `Always`, a single publish leaves its record in the pending buffer
/// for the syncer to write together with the rest of its group, up to this
/// many buffered bytes.
pub(super) const DEFER_WRITE_MAX: usize = 1024 * 1024;

/// Called under the stream lock after each message of a batch is stored,
/// with its sequence and subject.
pub(crate) type OnStored<'a> = &'a mut dyn FnMut(&mut Inner, u64, &str);

/// Per-message outcome inside a publish, before the write.
pub(crate) enum Appended {
    Stored(u64),
    Duplicate(u64),
}

impl Stream {
    /// Publishes one message: checks, encodes, one write to the OS, then (under
    /// `Durability::Always`) waits for the group commit covering it.
    pub(crate) async fn publish(self: &Arc<Self>, msg: &Message) -> Result<PublishAck> {
        let (ack, gen) = {
            let mut g = self.lock();
            let now = self.now();
            // Records of other publishers may be pending (deferred below):
            // a failed append removes only its own bytes.
            let mark = g.pending.len();
            let r = self.append(&mut g, msg, now);
            let r = match r {
                // Invariant 4: under `Always` the syncer writes the whole
                // group with one call before its fsync; the ack waits for it.
                Ok(a) if self.defers_writes() && g.pending.len() < DEFER_WRITE_MAX => Ok(a),
                Ok(a) => g.flush(&self.name).map(|()| a),
                Err(e) => {
                    g.pending.truncate(mark);
                    Err(e)
                }
            };
            if r.is_ok() {
                self.count_call(&mut g);
            }
            self.notify(&g);
            self.after_change(&mut g);
            let a = r?;
            // Pending bytes become durable with the next write generation.
            let gen = g.write_gen + u64::from(!g.pending.is_empty());
            (a, gen)
        };
        let (seq, duplicate) = match ack {
            Appended::Stored(s) => (s, false),
            Appended::Duplicate(s) => (s, true),
        };
        // A duplicate's original may have been written an instant ago by a
        // concurrent retry: its ack, too, waits until the original is durable.
        self.wait_durable(gen).await?;
        Ok(PublishAck {
            stream: self.label.clone(),
            seq,
            duplicate,
        })
    }

    /// Appends many messages under one lock with one write; `on_stored` is
    /// called under the lock right after each message is stored. Returns the
    /// outcomes and the write generation [`Stream::ack_batch`] waits for.
    pub(crate) fn append_batch(
        &self,
        msgs: &[&Message],
        mut on_stored: Option<OnStored<'_>>,
    ) -> (Vec<Result<Appended>>, u64) {
        let mut out: Vec<Result<Appended>> = Vec::with_capacity(msgs.len());
        let gen;
        {
            let mut g = self.lock();
            let now = self.now();
            for m in msgs {
                let r = self.append(&mut g, m, now);
                if let (Some(f), Ok(Appended::Stored(seq))) = (&mut on_stored, &r) {
                    f(&mut g, *seq, &m.subject);
                }
                if r.is_err() && g.poisoned.is_some() {
                    out.push(r);
                    break;
                }
                out.push(r);
            }
            if let Err(e) = g.flush(&self.name) {
                let _ = e;
            }
            if let Some(err) = g.poisoned.clone() {
                for r in out.iter_mut() {
                    if matches!(r, Ok(Appended::Stored(_))) {
                        *r = Err(Error::Poisoned {
                            stream: self.name.clone(),
                            cause: err.clone(),
                        });
                    }
                }
                while out.len() < msgs.len() {
                    out.push(Err(Error::Poisoned {
                        stream: self.name.clone(),
                        cause: err.clone(),
                    }));
                }
            }
            if out.iter().any(|r| r.is_ok()) {
                self.count_call(&mut g);
            }
            self.notify(&g);
            self.after_change(&mut g);
            gen = g.write_gen;
        }
        (out, gen)
    }

    /// The acks of a batch [`Stream::append_batch`] appended, once its write
    /// generation `gen` is durable.
    pub(crate) async fn ack_batch(
        self: &Arc<Self>,
        out: Vec<Result<Appended>>,
        gen: u64,
    ) -> Vec<Result<PublishAck>> {
        let durable = if out.iter().any(|r| r.is_ok()) {
            self.wait_durable(gen).await
        } else {
            Ok(())
        };
        out.into_iter()
            .map(|r| match r {
                Ok(Appended::Stored(seq)) => match &durable {
                    Ok(()) => Ok(PublishAck {
                        stream: self.label.clone(),
                        seq,
                        duplicate: false,
                    }),
                    Err(_) => Err(self.poisoned_now()),
                },
                Ok(Appended::Duplicate(seq)) => match &durable {
                    Ok(()) => Ok(PublishAck {
                        stream: self.label.clone(),
                        seq,
                        duplicate: true,
                    }),
                    Err(_) => Err(self.poisoned_now()),
                },
                Err(e) => Err(e),
            })
            .collect()
    }

    pub(super) fn poisoned_now(&self) -> Error {
        if self.is_closed() {
            return Error::Closed;
        }
        self.lock()
            .poison_error(&self.name)
            .unwrap_or(Error::Closed)
    }

    /// Checks and encodes one message into the pending buffer, updating the
    /// state; the caller flushes.
    pub(super) fn append(&self, g: &mut Inner, msg: &Message, now: i64) -> Result<Appended> {
        if let Some(e) = g.poison_error(&self.name) {
            return Err(e);
        }
        let storage = self.storage();
        let h = &msg.headers;
        let (mut msg_id, mut rollup) = (None, None);
        let mut exp_last = None;
        let mut exp_subj = None;
        if !h.is_empty() {
            if let Some(expected) = h.get(NATS_EXPECTED_STREAM) {
                if expected != self.name {
                    return Err(Error::WrongStream {
                        expected: expected.to_owned(),
                        actual: self.name.clone(),
                    });
                }
            }
            msg_id = h.get(NATS_MSG_ID).filter(|id| !id.is_empty());
            exp_last = h
                .get(NATS_EXPECTED_LAST_SEQUENCE)
                .map(|v| parse_seq(NATS_EXPECTED_LAST_SEQUENCE, v))
                .transpose()?;
            exp_subj = h
                .get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)
                .map(|v| parse_seq(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, v))
                .transpose()?;
            rollup = h.get(NATS_ROLLUP);
        }
        let time = now.max(g.last_time);
        if let Some(id) = msg_id {
            // Invariant 9: a repeated id inside the window yields the original.
            g.dedup
                .expire(time.saturating_sub(dur_ns(g.config.duplicate_window)));
            if let Some((seq, _)) = g.dedup.map.get(id) {
                return Ok(Appended::Duplicate(*seq));
            }
        }
        if let Some(expected) = exp_last {
            if expected != g.last_seq {
                return Err(Error::WrongLastSequence {
                    expected,
                    current: g.last_seq,
                });
            }
        }
        if let Some(expected) = exp_subj {
            let current = g.subject_last_seq(storage, &msg.subject)?;
            if expected != current {
                return Err(Error::WrongLastSequence { expected, current });
            }
        }
        let rollup_all = match rollup {
            None => None,
            Some(_) if !g.config.allow_rollup => {
                return Err(Error::Denied {
                    stream: self.name.clone(),
                    operation: "rollup (Nats-Rollup header); set allow_rollup on the stream",
                })
            }
            Some("sub") => Some(false),
            Some("all") => Some(true),
            Some(other) => {
                return Err(Error::invalid_argument(ArgumentError::RollupValue {
                    value: other.to_string(),
                }))
            }
        };
        let msg_size = msg.headers.encoded_len() + msg.payload.len();
        if let Some(max) = g.config.max_msg_size {
            if msg_size > max as usize {
                return Err(Error::MaxPayloadExceeded {
                    size: msg_size,
                    max: max as usize,
                });
            }
        }
        if h.len() > u16::MAX as usize
            || h.iter()
                .any(|(n, v)| n.len() > u16::MAX as usize || v.len() > u32::MAX as usize)
        {
            return Err(Error::invalid_argument(ArgumentError::HeadersTooLarge));
        }
        let rec_size = record::message_size(&msg.subject, h, msg.payload.len());
        if rec_size > record::MAX_RECORD {
            return Err(Error::MaxPayloadExceeded {
                size: msg_size,
                max: record::MAX_RECORD - (rec_size - msg_size),
            });
        }
        if let Some(max) = g.config.max_bytes {
            if rec_size as u64 > max {
                return Err(Error::MaxPayloadExceeded {
                    size: msg_size,
                    max: (max as usize).saturating_sub(rec_size - msg_size),
                });
            }
        }
        // max_age is enforced on publish too, so expired messages free room.
        if g.config.max_age.is_some() {
            g.expire(&self.name, storage, now)?;
        }
        if g.config.discard == DiscardPolicy::New && rollup_all.is_none() {
            // As nats-server: a message that replaces its subject's oldest
            // (the subject is at max_msgs_per_subject, which evicts under
            // either policy) does not grow the stream, so max_msgs lets it in.
            let subject_count = match g.config.max_msgs_per_subject {
                Some(_) => {
                    let k = g.subjects.key_cached(&msg.subject);
                    g.subjects.count(k)
                }
                None => 0,
            };
            let replaces = !g.config.discard_new_per_subject
                && g.config
                    .max_msgs_per_subject
                    .is_some_and(|max| subject_count >= max);
            if let Some(max) = g.config.max_msgs {
                if g.messages >= max && !replaces {
                    return Err(self.full(format!("max_msgs {max}")));
                }
            }
            if let Some(max) = g.config.max_bytes {
                if g.bytes + rec_size as u64 > max {
                    return Err(self.full(format!("max_bytes {max}")));
                }
            }
            // As JetStream: `discard new` governs the per-subject limit only
            // with `discard_new_per_subject`; otherwise the subject's oldest goes.
            if let Some(max) = g.config.max_msgs_per_subject {
                if g.config.discard_new_per_subject && subject_count >= max {
                    return Err(self.full(format!("max_msgs_per_subject {max}")));
                }
            }
        }
        if g.active.size >= self.env.segment_size && g.last_seq + 1 > g.active.base {
            self.roll(g)?;
        }
        let seq = g.last_seq + 1;
        g.reserve(&self.name, storage, seq)?;
        if let Some(all) = rollup_all {
            // Rollup is an explicit deletion: logged as a purge record right
            // before the message (invariant 10).
            let filter = if all { "" } else { msg.subject.as_str() };
            g.active.size += record::encode_purge(&mut g.pending, seq, time, filter, 0) as u64;
            g.apply_purge(&self.name, storage, filter, seq, 0)?;
        }
        let offset = g.active.size;
        let size =
            record::encode_message(&mut g.pending, seq, time, &msg.subject, h, &msg.payload) as u64;
        g.active.size += size;
        g.note_message(seq, time, &msg.subject, size, offset, msg_id);
        // The per-subject limit evicts under either discard policy (a
        // rejection was decided above); the stream-wide limits only under `old`.
        let mut evict = || -> Result<()> {
            if g.config.max_msgs_per_subject.is_some() {
                g.enforce_subject_limit(&self.name, storage, &msg.subject)?;
            }
            if g.config.discard == DiscardPolicy::Old
                && (g.config.max_msgs.is_some() || g.config.max_bytes.is_some())
            {
                g.enforce_limits(&self.name, storage)?;
            }
            Ok(())
        };
        if let Err(e) = evict() {
            // The record is encoded and accounted: the state cannot be
            // rolled back, so refuse further writes (invariant 5).
            return Err(g.poison(&self.name, format!("evicting old messages failed: {e}")));
        }
        Ok(Appended::Stored(seq))
    }

    pub(super) fn full(&self, limit: String) -> Error {
        Error::StreamFull {
            stream: self.name.clone(),
            limit,
        }
    }

    /// Seals the active segment and starts a new one.
    pub(super) fn roll(&self, g: &mut Inner) -> Result<()> {
        g.flush(&self.name)?;
        let storage = self.storage();
        let base = g.last_seq + 1;
        let path = g.segdir.join(segment::log_name(base));
        let step = |g: &mut Inner| -> std::io::Result<Arc<dyn StorageFile>> {
            if let Some(old) = g.active.file.clone() {
                // IMPORTANT: a sealed segment holds only records, and is
                // durable (its cut included) before its successor exists, so
                // only the last segment can ever be torn (rule 5).
                g.trim_active()?;
                old.sync_data()?;
            }
            let file = storage.create(&path)?;
            file.write_all_at(&segment::header_bytes(), 0)?;
            // IMPORTANT: fsync the directory so the new segment's name is
            // durable before any record in it is acknowledged (invariant 6).
            storage.sync_dir(&g.segdir)?;
            Ok(file)
        };
        let file = match step(g) {
            Ok(f) => f,
            Err(e) => {
                let cause = format!("rolling to segment {}: {e}", path.display());
                return Err(g.poison(&self.name, cause));
            }
        };
        let mut seg = SegmentMeta::new(base, path);
        seg.file = Some(file);
        let mut old = std::mem::replace(&mut g.active, seg);
        // In memory until the maintenance thread writes its `.idx` (then
        // read on demand through the bounded cache).
        old.index.shrink_to_fit();
        g.sealed.push_back(old);
        g.flushed = SEGMENT_HEADER;
        g.ckpt_needed = true;
        // The manifest lists the new segment, with a new reservation, before
        // any record is written to it.
        g.reserved = g.reserved.max(base.saturating_add(g.reserve_step));
        if let Err(e) = g.write_manifest(storage) {
            return Err(g.poison(&self.name, format!("writing the segment manifest: {e}")));
        }
        Ok(())
    }
}

pub(super) fn parse_seq(header: &str, v: &str) -> Result<u64> {
    v.trim().parse().map_err(|_| {
        Error::invalid_argument(ArgumentError::NotASequence {
            header: header.to_string(),
            value: v.to_string(),
        })
    })
}
