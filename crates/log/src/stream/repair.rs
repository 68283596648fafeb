//! Repair (docs/design.md "Repair"): the explicit, opt-in fix of a stream
//! whose segments lost bytes. Each damaged segment is copied to the
//! quarantine folder and rewritten without its unreadable spans; missing
//! segments leave the manifest; every lost range becomes a gap (deleted,
//! as after `delete_message`) recorded in the manifest, so its sequences
//! are never assigned again. The stream refuses writes afterwards: the
//! caller reopens the store, which rebuilds indexes and the checkpoint.

use std::path::{Path, PathBuf};

use durabus_core::{Error, Result};

use crate::checkpoint::CHECKPOINT_FILE;
use crate::segment::{self, Damage};
use crate::storage::write_atomic;

use super::{io_err, Stream};

/// What [`crate::repair`] did to one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamRepair {
    /// The stream.
    pub stream: String,
    /// Sequence ranges (inclusive) now recorded as gaps: lost for good.
    pub lost: Vec<(u64, u64)>,
    /// Segments rewritten without their unreadable bytes.
    pub rewritten: Vec<RewrittenSegment>,
    /// Segments whose files were missing, no longer listed.
    pub missing: Vec<PathBuf>,
}

/// A segment [`crate::repair`] rewrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RewrittenSegment {
    /// The segment file.
    pub segment: PathBuf,
    /// Bytes left out (the unreadable spans, and what a cut took).
    pub bytes_dropped: u64,
    /// The copy of the file as it was.
    pub quarantined: PathBuf,
}

/// `bytes` without the spans of `damage` (clamped to `bytes`).
fn without(bytes: &[u8], damage: &[Damage]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0usize;
    for d in damage {
        let start = usize::try_from(d.start)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = usize::try_from(d.end)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        if start > at {
            out.extend_from_slice(&bytes[at..start]);
        }
        at = at.max(end);
    }
    if at < bytes.len() {
        out.extend_from_slice(&bytes[at..]);
    }
    out
}

impl Stream {
    /// Repairs this stream (see the module docs); `quarantine` is the
    /// folder that receives copies of rewritten segments. Leaves the stream
    /// refusing writes until the store is reopened.
    pub(crate) fn repair(&self, quarantine: &Path) -> Result<StreamRepair> {
        let storage = self.storage();
        let mut g = self.lock();
        g.flush_for_read()?;
        let mut report = StreamRepair {
            stream: self.name.clone(),
            ..StreamRepair::default()
        };
        let damaged: Vec<u64> = g
            .sealed
            .iter()
            .chain(std::iter::once(&g.active))
            .filter(|s| !s.missing && !s.damage.is_empty())
            .map(|s| s.base)
            .collect();
        if damaged.is_empty() && g.losses.is_empty() {
            return Ok(report);
        }
        let qdir = quarantine.join(&self.name);
        if !damaged.is_empty() {
            storage
                .create_dir_all(&qdir)
                .map_err(io_err(format!("creating {}", qdir.display())))?;
        }
        let stamp = self.env.clock.now_ns();
        for base in damaged {
            let Some(seg) = g.seg_by_base(base) else {
                continue;
            };
            let (path, spans) = (seg.path.clone(), seg.damage.clone());
            let limit = g.readable_limit(seg);
            let file = g.seg_file(storage, base)?;
            let len = file
                .len()
                .map_err(io_err(format!("reading {}", path.display())))?
                .min(limit);
            let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
            segment::read_full(&*file, &mut bytes, 0)
                .map_err(io_err(format!("reading {}", path.display())))?;
            let name = path.file_name().map_or_else(
                || segment::log_name(base),
                |n| n.to_string_lossy().into_owned(),
            );
            let quarantined = qdir.join(format!("{name}.{stamp}"));
            write_atomic(storage, &quarantined, &bytes)
                .map_err(io_err(format!("writing {}", quarantined.display())))?;
            let kept = without(&bytes, &spans);
            // IMPORTANT: the copy is durable before the segment is replaced.
            write_atomic(storage, &path, &kept)
                .map_err(io_err(format!("rewriting {}", path.display())))?;
            let idx = g.segdir.join(segment::idx_name(base));
            g.indexes.remove(g.cache_id, base);
            match storage.remove_file(&idx) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", idx.display()), e)),
            }
            if let Some(s) = g.sealed.iter_mut().find(|s| s.base == base) {
                s.size = kept.len() as u64;
            }
            tracing::warn!(stream = %self.name, segment = %path.display(),
                quarantined = %quarantined.display(), bytes_dropped = limit - kept.len() as u64,
                "repair rewrote a damaged segment");
            report.rewritten.push(RewrittenSegment {
                segment: path,
                bytes_dropped: limit.saturating_sub(kept.len() as u64),
                quarantined,
            });
        }
        let missing: Vec<PathBuf> = g
            .sealed
            .iter()
            .filter(|s| s.missing)
            .map(|s| s.path.clone())
            .collect();
        g.sealed.retain(|s| !s.missing);
        report.missing = missing;
        let lost: Vec<(u64, u64)> = g.losses.iter().map(|(lo, l)| (*lo, l.hi)).collect();
        g.gaps.extend(lost.iter().copied());
        g.gaps.sort_unstable();
        report.lost = lost;
        g.write_manifest(storage).map_err(io_err(format!(
            "writing the manifest of stream {}",
            self.name
        )))?;
        let ckpt = self.dir.join(CHECKPOINT_FILE);
        match storage.remove_file(&ckpt) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", ckpt.display()), e)),
        }
        // The in-memory state no longer matches the files: no more writes,
        // no checkpoint; the reopen rebuilds it.
        g.poisoned = Some("repaired; reopen the store".to_owned());
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: u64, end: u64) -> Damage {
        Damage {
            start,
            end,
            lo: 0,
            hi: 0,
            reason: String::new(),
        }
    }

    #[test]
    fn without_drops_exactly_the_spans_clamped_to_the_bytes() {
        let b: Vec<u8> = (0..20).collect();
        assert_eq!(without(&b, &[]), b);
        assert_eq!(
            without(&b, &[span(2, 4), span(10, 30)]),
            vec![0, 1, 4, 5, 6, 7, 8, 9]
        );
        assert_eq!(without(&b, &[span(25, 40)]), b);
    }
}
