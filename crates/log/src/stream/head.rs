//! The head cursor: finds, times and evicts the oldest live message,
//! reading it back from its segment (there is no per-message index).

use durabus_core::Result;

use crate::record::{self, Decoded, Kind};
use crate::segment::{self, SEGMENT_HEADER};
use crate::storage::Storage;

use super::io_err;
use super::state::Inner;

/// The head message as the cursor found it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadRec {
    pub(super) seq: u64,
    pub(super) time: i64,
    pub(super) size: u64,
}

impl Inner {
    /// Finds the oldest live message, leaving the cursor on it.
    pub(super) fn head_find(
        &mut self,
        stream: &str,
        storage: &dyn Storage,
    ) -> Result<Option<HeadRec>> {
        if self.messages == 0 {
            return Ok(None);
        }
        let first = self.first_seq;
        let mut refilled_at = u64::MAX;
        loop {
            // Reposition when the cursor's segment is gone or behind the head.
            let tbase = self.seg_for_seq(first).base;
            let toff = self.with_index(storage, tbase, |ix| segment::seek_seq(ix, first))?;
            // first_seq is live, so the head record is in its segment; the
            // cursor starts at 0 (before every segment) after open.
            if self.head_base < tbase || self.seg_by_base(self.head_base).is_none() {
                self.head_base = tbase;
                self.head_off = toff;
                self.head_buf.clear();
            } else if self.head_base == tbase && toff > self.head_off {
                self.head_off = toff;
            }
            let Some(seg) = self.seg_by_base(self.head_base) else {
                return Ok(None);
            };
            let limit = if seg.missing {
                0
            } else {
                self.readable_limit(seg)
            };
            let is_active = seg.base == self.active.base;
            let path = seg.path.clone();
            if self.head_off >= limit {
                if is_active {
                    if !self.pending.is_empty() {
                        self.flush(stream)?;
                        continue;
                    }
                    return Ok(None);
                }
                let Some(next) = self.seg_after(self.head_base) else {
                    return Ok(None);
                };
                self.head_base = next.base;
                self.head_off = SEGMENT_HEADER;
                self.head_buf.clear();
                continue;
            }
            let buf_end = self.head_buf_off + self.head_buf.len() as u64;
            let in_buf = self.head_off >= self.head_buf_off && self.head_off < buf_end;
            let rel = (self.head_off - self.head_buf_off.min(self.head_off)) as usize;
            let outcome = if in_buf {
                match record::decode(&self.head_buf[rel..]) {
                    Decoded::Ok(r) => Ok((r.kind, r.seq, r.time, r.size as u64)),
                    Decoded::Torn => Err(None),
                    Decoded::Corrupt(reason) => Err(Some(reason)),
                }
            } else {
                Err(None)
            };
            match outcome {
                Ok((kind, seq, time, size)) => {
                    if kind == Kind::Message && seq >= first && self.is_live(seq) {
                        self.head_cache = Some((seq, time));
                        return Ok(Some(HeadRec { seq, time, size }));
                    }
                    self.head_off += size;
                }
                Err(Some(reason)) => self.step_over_head(storage, reason)?,
                Err(None) => {
                    if refilled_at == self.head_off {
                        let reason = "record ends past the written data".to_owned();
                        self.step_over_head(storage, reason)?;
                        continue;
                    }
                    refilled_at = self.head_off;
                    let file = self.seg_file(storage, self.head_base)?;
                    let mut want = ((limit - self.head_off) as usize).min(segment::CHUNK);
                    let mut hdr = [0u8; 4];
                    if segment::read_full(&*file, &mut hdr, self.head_off)
                        .map_err(io_err(format!("reading {}", path.display())))?
                        == 4
                    {
                        if let Some(n) = record::announced_size(&hdr) {
                            if n > want && (n as u64) <= limit - self.head_off {
                                want = n;
                            }
                        }
                    }
                    self.head_buf.resize(want, 0);
                    segment::read_full(&*file, &mut self.head_buf, self.head_off)
                        .map_err(io_err(format!("reading {}", path.display())))?;
                    self.head_buf_off = self.head_off;
                }
            }
        }
    }

    /// Moves the head cursor over the damaged record it is on.
    fn step_over_head(&mut self, storage: &dyn Storage, reason: String) -> Result<()> {
        let d = self.damage_at(storage, self.head_base, self.head_off, reason)?;
        self.head_off = self.head_off.max(d.end);
        self.head_buf.clear();
        Ok(())
    }

    /// The time of the oldest live message.
    pub(super) fn head_time(&mut self, stream: &str, storage: &dyn Storage) -> Result<Option<i64>> {
        if let Some((seq, t)) = self.head_cache {
            if seq == self.first_seq {
                return Ok(Some(t));
            }
        }
        Ok(self.head_find(stream, storage)?.map(|h| h.time))
    }

    /// Removes the oldest live message; false when there is none.
    pub(super) fn evict_head(&mut self, stream: &str, storage: &dyn Storage) -> Result<bool> {
        let Some(h) = self.head_find(stream, storage)? else {
            return Ok(false);
        };
        let buf = std::mem::take(&mut self.head_buf);
        let rel = (self.head_off - self.head_buf_off) as usize;
        let r = match buf.get(rel..).map(record::decode) {
            Some(Decoded::Ok(r)) => Some(r.subject),
            _ => None,
        };
        let found = r.is_some();
        if let Some(subject) = r {
            self.remove_msg(h.seq, subject, h.size);
        }
        self.head_buf = buf;
        self.head_off += h.size;
        Ok(found)
    }
}
