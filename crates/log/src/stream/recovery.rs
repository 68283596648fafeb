//! Opening a stream: docs/design.md "Recovery rules" 3-7, and creating a new
//! stream's files.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use durabus_core::{Error, Result, StreamConfig, NATS_MSG_ID};
use serde::{Deserialize, Serialize};

use super::index::{check_header, load_index, rebuild_index, warn_damage};
use super::state::Loss;
use super::{
    damage, from_system_time, scan_error, to_system_time, Dedup, Env, Inner, Stream, Subjects,
};
use crate::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use crate::manifest;
use crate::rangeset::RangeSet;
use crate::record::Kind;
use crate::segment::{self, Damage, ScanEnd, SegmentMeta, SEGMENT_HEADER};
use crate::storage::{write_atomic, Storage};

/// `config.json` of a stream.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ConfigFile {
    pub(crate) config: StreamConfig,
    pub(crate) created_ns: i64,
}

/// A torn tail that recovery cut: (segment, bytes dropped).
pub(crate) type Truncation = (PathBuf, u64);

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::corrupt(path, offset, reason)
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(context, e)
}

/// Writes a stream's config atomically (invariant 6).
pub(crate) fn write_config(
    storage: &dyn Storage,
    dir: &Path,
    config: &StreamConfig,
    created: SystemTime,
) -> Result<()> {
    let cf = ConfigFile {
        config: config.clone(),
        created_ns: from_system_time(created),
    };
    let bytes = serde_json::to_vec_pretty(&cf)
        .map_err(|e| Error::internal(format!("encoding stream config: {e}")))?;
    let path = dir.join("config.json");
    write_atomic(storage, &path, &bytes).map_err(io(format!("writing {}", path.display())))
}

/// Creates a new stream's directory atomically: built under
/// `streams/.creating-<name>`, then renamed into place. `created` is the
/// time its catalog entry already holds.
pub(crate) fn create(
    env: Arc<Env>,
    streams_dir: &Path,
    config: StreamConfig,
    created: SystemTime,
) -> Result<Arc<Stream>> {
    let storage = &*env.storage;
    let name = config.name.clone();
    let staging = streams_dir.join(format!(".creating-{name}"));
    let dir = streams_dir.join(&name);
    let ctx = |what: &str| format!("creating stream {name}: {what}");
    if storage.exists(&staging).unwrap_or(false) {
        storage
            .remove_dir_all(&staging)
            .map_err(io(ctx("removing a stale staging directory")))?;
    }
    let segdir = staging.join("segments");
    storage
        .create_dir_all(&segdir)
        .map_err(io(ctx("creating directories")))?;
    write_config(storage, &staging, &config, created)?;
    let reserve_step = manifest::reservation(env.segment_size);
    let first = manifest::Manifest {
        active: 1,
        reserved: reserve_step,
        ..Default::default()
    };
    manifest::write(storage, &staging, &first).map_err(io(ctx("writing the manifest")))?;
    let seg_path = segdir.join(segment::log_name(1));
    let f = storage
        .create(&seg_path)
        .map_err(io(ctx("creating the first segment")))?;
    f.write_all_at(&segment::header_bytes(), 0)
        .map_err(io(ctx("writing the segment header")))?;
    f.sync_data().map_err(io(ctx("syncing the segment")))?;
    drop(f);
    storage.sync_dir(&segdir).map_err(io(ctx("syncing")))?;
    storage
        .rename(&staging, &dir)
        .map_err(io(ctx("renaming into place")))?;
    // IMPORTANT: fsync the directory after rename.
    storage.sync_dir(streams_dir).map_err(io(ctx("syncing")))?;
    let segdir = dir.join("segments");
    let mut active = SegmentMeta::new(1, segdir.join(segment::log_name(1)));
    active.file = Some(
        storage
            .open(&active.path)
            .map_err(io(ctx("opening the segment")))?,
    );
    let mut inner = Inner::new_empty(config, created, segdir, active, env.indexes.clone());
    inner.reserve_step = reserve_step;
    inner.reserved = first.reserved;
    Ok(Stream::new(name, dir, env, inner))
}

/// Loads a checkpoint if it matches the segments on disk and its subject
/// table adds up (else `None`: full scan).
fn load_checkpoint(
    storage: &dyn Storage,
    bytes: &[u8],
    segdir: &Path,
    bases: &[u64],
) -> Option<(Checkpoint, Subjects)> {
    let c = Checkpoint::decode(bytes)?;
    let n = c.segments.len();
    if n == 0 || bases.len() < n || c.segments[n - 1].base != c.covered_base {
        return None;
    }
    for (i, s) in c.segments.iter().enumerate() {
        if bases[i] != s.base {
            return None;
        }
        let len = storage
            .open(&segdir.join(segment::log_name(s.base)))
            .ok()?
            .len()
            .ok()?;
        let ok = if i + 1 < n {
            len == s.size
        } else {
            len >= c.covered_offset && c.covered_offset >= SEGMENT_HEADER
        };
        if !ok {
            return None;
        }
    }
    let subjects = Subjects::from_ckpt(&c.subjects)?;
    Some((c, subjects))
}

/// Reads and checks a stream's `config.json` (recovery rule 3): missing,
/// unreadable, not valid JSON, or naming another stream is an error naming
/// the file.
pub(crate) fn read_config(storage: &dyn Storage, dir: &Path, name: &str) -> Result<ConfigFile> {
    let cfg_path = dir.join("config.json");
    let cfg_bytes = storage.read_file(&cfg_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            corrupt(&cfg_path, 0, "stream config is missing")
        } else {
            Error::io(format!("reading {}", cfg_path.display()), e)
        }
    })?;
    let cf: ConfigFile = serde_json::from_slice(&cfg_bytes).map_err(|e| {
        corrupt(
            &cfg_path,
            0,
            format!("stream config is not valid JSON: {e}"),
        )
    })?;
    if cf.config.name != name {
        return Err(corrupt(
            &cfg_path,
            0,
            format!(
                "stream config names stream {:?}, not its directory's {name:?}",
                cf.config.name
            ),
        ));
    }
    Ok(cf)
}

/// Opens (recovers) the stream in `dir`. On error nothing on disk was changed.
/// `scanned` is called with the length of each segment file once its scan
/// is done (for [`crate::repair_with_progress`]).
pub(crate) fn open(
    env: Arc<Env>,
    dir: PathBuf,
    name: &str,
    scanned: &dyn Fn(u64),
) -> Result<(Arc<Stream>, Option<Truncation>)> {
    let storage: &dyn Storage = &*env.storage;
    let cf = read_config(storage, &dir, name)?;
    let config = cf.config;
    let created = to_system_time(cf.created_ns);
    let segdir = dir.join("segments");
    let names = storage
        .list_dir(&segdir)
        .map_err(io(format!("listing {}", segdir.display())))?;
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| segment::parse_log_name(n))
        .collect();
    bases.sort_unstable();
    let mut stray: Vec<PathBuf> = names
        .iter()
        .filter(|n| n.ends_with(".tmp"))
        .map(|n| segdir.join(n))
        .collect();
    let now = env.clock.now_ns();
    let window_cutoff =
        now.saturating_sub(i64::try_from(config.duplicate_window.as_nanos()).unwrap_or(i64::MAX));

    // The manifest is the truth about which segments exist (rule 3a).
    let manifest = match manifest::read(storage, &dir) {
        Ok(m) => m,
        Err(reason) => {
            tracing::warn!(stream = name, %reason,
                "the segment manifest is damaged: trusting the segment files (verify reports it)");
            None
        }
    };
    let mut missing: Vec<u64> = Vec::new();
    if let Some(m) = &manifest {
        let listed: Vec<u64> = m.bases().collect();
        let first = listed.first().copied().unwrap_or(m.active);
        let mut plan = listed.clone();
        for &b in &bases {
            if b < first {
                // Its removal was recorded, the unlink cut off: finish it.
                stray.push(segdir.join(segment::log_name(b)));
                stray.push(segdir.join(segment::idx_name(b)));
            } else if b > m.active {
                // A roll cut off before its manifest: nothing in it was
                // acknowledged, it goes on as the newest segment.
                plan.push(b);
            } else if !listed.contains(&b) {
                tracing::warn!(
                    stream = name,
                    base = b,
                    "a segment file the manifest does not list is ignored"
                );
            }
        }
        missing = listed.into_iter().filter(|b| !bases.contains(b)).collect();
        bases = plan;
    }

    if bases.is_empty() && storage.is_read_only() {
        return Err(Error::ReadOnly {
            path: segdir,
            operation: "starting a stream without segment files",
        });
    }
    // Read once: the state to start from, and (rule 3a) the last sequence
    // it saw synced, even when stale.
    let ckpt_bytes = storage
        .read_file(&dir.join(CHECKPOINT_FILE))
        .unwrap_or_default();
    let durable_last = Checkpoint::durable_last_seq(&ckpt_bytes).unwrap_or(0);
    if bases.is_empty() {
        // Only possible if files were removed by hand: start over after the
        // checkpoint's last sequence if there is one.
        let base = durable_last + 1;
        let path = segdir.join(segment::log_name(base));
        let f = storage
            .create(&path)
            .map_err(io(format!("creating {}", path.display())))?;
        f.write_all_at(&segment::header_bytes(), 0)
            .and_then(|()| f.sync_data())
            .and_then(|()| storage.sync_dir(&segdir))
            .map_err(io(format!("creating {}", path.display())))?;
        let mut active = SegmentMeta::new(base, path);
        active.file = Some(f);
        let mut inner = Inner::new_empty(config, created, segdir, active, env.indexes.clone());
        inner.reserve_step = manifest::reservation(env.segment_size);
        inner.reserved = base.saturating_add(inner.reserve_step);
        inner
            .write_manifest(storage)
            .map_err(io(format!("writing the manifest of stream {name}")))?;
        return Ok((Stream::new(name.to_owned(), dir, env, inner), None));
    }

    let ckpt = if env.full_scan {
        None
    } else {
        load_checkpoint(storage, &ckpt_bytes, &segdir, &bases)
    };
    let seg_path = |base: u64| segdir.join(segment::log_name(base));
    let mut damaged: Vec<(u64, Vec<Damage>)> = Vec::new();

    // Build the starting state and the scan plan: (segment index in `bases`, start offset).
    let (mut g, first_scan) = match ckpt {
        Some((c, subjects)) => {
            let n = c.segments.len();
            let mut sealed = VecDeque::with_capacity(n);
            for s in &c.segments[..n - 1] {
                let path = seg_path(s.base);
                // Rule 6: a sealed segment without a valid index gets it
                // rebuilt (kept in memory until written, after recovery).
                // A valid one is only checked: it is read again on demand.
                let rebuilt = match load_index(storage, &segdir, s.base, s.size) {
                    Some(_) => None,
                    None => {
                        let f = storage
                            .open(&path)
                            .map_err(io(format!("opening {}", path.display())))?;
                        let (index, damage) =
                            rebuild_index(&*f, &path, s.size, s.base, s.last_seq)?;
                        damaged.push((s.base, damage));
                        Some(index)
                    }
                };
                let mut m = SegmentMeta::new(s.base, path);
                m.size = s.size;
                m.msgs = s.msgs;
                m.bytes = s.bytes;
                m.last_seq = s.last_seq;
                m.first_time = s.first_time;
                m.last_time = s.last_time;
                m.indexed = rebuilt.is_none();
                m.index = rebuilt.unwrap_or_default();
                sealed.push_back(m);
            }
            let s = &c.segments[n - 1];
            let mut active = SegmentMeta::new(s.base, seg_path(s.base));
            active.size = c.covered_offset;
            active.msgs = s.msgs;
            active.bytes = s.bytes;
            active.last_seq = s.last_seq;
            active.first_time = s.first_time;
            active.last_time = s.last_time;
            active.index = c.covered_index.clone();
            let mut g = Inner::new_empty(
                config.clone(),
                created,
                segdir.clone(),
                active,
                env.indexes.clone(),
            );
            g.sealed = sealed;
            g.flushed = c.covered_offset;
            g.first_seq = c.first_seq;
            g.last_seq = c.last_seq;
            g.last_time = c.last_time;
            g.messages = c.messages;
            g.bytes = c.bytes;
            let mut deleted = RangeSet::default();
            for &(lo, hi) in &c.deleted {
                deleted.insert_range(lo, hi);
            }
            g.deleted = deleted;
            g.subjects = subjects;
            let mut dedup = Dedup::default();
            for (id, seq, t) in &c.dedup {
                if *t >= window_cutoff {
                    dedup.insert(id, *seq, *t);
                }
            }
            g.dedup = dedup;
            (g, (n - 1, c.covered_offset))
        }
        None => {
            let active = SegmentMeta::new(bases[0], seg_path(bases[0]));
            (
                Inner::new_empty(
                    config.clone(),
                    created,
                    segdir.clone(),
                    active,
                    env.indexes.clone(),
                ),
                (0, SEGMENT_HEADER),
            )
        }
    };
    g.recovering = true;
    for (base, ds) in damaged {
        for d in ds {
            g.note_damage(base, d);
        }
    }

    // Rule 5: scan from the covered position to the end.
    let mut truncation: Option<(PathBuf, u64, u64, bool)> = None; // (path, cut at, dropped, rewrite header)
    let last_i = bases.len() - 1;
    for (i, &base) in bases.iter().enumerate().skip(first_scan.0) {
        let is_last = i == last_i;
        if i > first_scan.0 {
            // Move on: the scanned segment becomes sealed.
            if base <= g.last_seq {
                return Err(corrupt(
                    &seg_path(base),
                    0,
                    format!(
                        "segment starts at {base} but sequence {} was already seen",
                        g.last_seq
                    ),
                ));
            }
            let next = SegmentMeta::new(base, seg_path(base));
            let mut prev = std::mem::replace(&mut g.active, next);
            prev.file = None;
            prev.index.shrink_to_fit();
            let on_disk = prev.missing
                || load_index(storage, &segdir, prev.base, prev.size)
                    .is_some_and(|ix| ix == prev.index);
            let prev_base = prev.base;
            g.sealed.push_back(prev);
            if on_disk {
                // Its index leaves memory (read again on demand).
                g.index_written(prev_base);
            }
            g.flushed = SEGMENT_HEADER;
            g.active.size = SEGMENT_HEADER;
            if base > g.last_seq + 1 {
                if g.messages == 0 {
                    g.first_seq = base;
                } else {
                    g.deleted.insert_range(g.last_seq + 1, base - 1);
                }
                g.last_seq = base - 1;
            }
        }
        let path = seg_path(base);
        if missing.contains(&base) {
            // Rule 3a: a listed segment whose file is gone. Every sequence
            // it held is lost (never deletions, never reused).
            let m = manifest.as_ref();
            let hi = match bases.get(i + 1) {
                Some(next) => next - 1,
                None => m.map_or(g.last_seq, |m| m.reserved).max(g.last_seq),
            };
            g.active.missing = true;
            g.active.size = m
                .and_then(|m| m.sealed_size(base))
                .unwrap_or(SEGMENT_HEADER);
            g.flushed = g.active.size;
            let reason = "the segment file is missing".to_owned();
            tracing::warn!(stream = name, segment = %path.display(), lost = ?(base..=hi),
                "a segment the manifest lists is missing: its messages are lost");
            let lo = base.min(g.last_seq + 1);
            g.note_loss(
                lo,
                Loss {
                    hi,
                    segment: path.clone(),
                    offset: 0,
                    reason,
                },
            );
            g.last_seq = g.last_seq.max(hi);
            continue;
        }
        let file = storage
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        let len = file
            .len()
            .map_err(io(format!("reading {}", path.display())))?;
        if !check_header(&*file, &path)? {
            if is_last {
                truncation = Some((path.clone(), 0, len, true));
                g.active.file = Some(file);
                break;
            }
            return Err(corrupt(&path, 0, "segment header is truncated"));
        }
        g.active.file = Some(file.clone());
        let mut start = if i == first_scan.0 {
            first_scan.1
        } else {
            SEGMENT_HEADER
        };
        let stream_name = name.to_owned();
        loop {
            let end = {
                let g = &mut g;
                segment::scan(&*file, start, len, &mut |off, r| {
                    let end = off + r.size as u64;
                    match r.kind {
                        Kind::Message => {
                            if r.seq <= g.last_seq {
                                return Err(corrupt(
                                    &path,
                                    off,
                                    format!(
                                        "sequence {} is not above the previous {}",
                                        r.seq, g.last_seq
                                    ),
                                ));
                            }
                            let id = if r.time >= window_cutoff {
                                r.header(NATS_MSG_ID)
                            } else {
                                None
                            };
                            g.active.size = end;
                            g.flushed = end;
                            g.note_message(r.seq, r.time, r.subject, r.size as u64, off, id);
                            if g.config.max_msgs_per_subject.is_some() {
                                g.enforce_subject_limit(&stream_name, storage, r.subject)?;
                            }
                            g.enforce_limits(&stream_name, storage)?;
                        }
                        Kind::Delete => {
                            g.active.size = end;
                            g.flushed = end;
                            if g.is_live(r.seq) {
                                let (subject, size) = g.read_info(&stream_name, storage, r.seq)?;
                                g.remove_msg(r.seq, &subject, size);
                            }
                        }
                        Kind::Purge => {
                            g.active.size = end;
                            g.flushed = end;
                            g.apply_purge(&stream_name, storage, r.subject, r.seq, r.purge_keep())?;
                        }
                    }
                    Ok(true)
                })
                .map_err(|e| scan_error(&path, e))?
            };
            g.active.size = g.active.size.max(start);
            g.flushed = g.active.size;
            let ScanEnd::Bad { offset, reason, .. } = end else {
                break;
            };
            if is_last {
                // Rule 5: a torn tail only if nothing valid follows (invariant 7),
                // or a sector of the bad record never reached the disk (power
                // loss: nothing from there was fsynced, so nothing was acked
                // under `always`).
                let mut rest = vec![0u8; (len - offset) as usize];
                segment::read_full(&*file, &mut rest, offset)
                    .map_err(io(format!("reading {}", path.display())))?;
                if segment::is_preallocated(&rest) {
                    // Zeros written ahead of the records under `always`: the
                    // log ends here and appends go on over them.
                    g.zeroed = len;
                    break;
                }
                if segment::lost_sector_at(&rest, offset)
                    || !segment::valid_record_after(&rest, g.last_seq + 1)
                {
                    truncation = Some((path.clone(), offset, len - offset, false));
                    break;
                }
            }
            // Rule 5: damage, not a torn tail. Step over it to the next record
            // that verifies; its sequences are lost, never reused.
            let hi_default = match bases.get(i + 1) {
                Some(next) => next - 1,
                None => g.last_seq,
            };
            let d = damage::measure(
                &*file,
                &path,
                offset,
                len,
                g.last_seq + 1,
                hi_default,
                reason,
            )?;
            warn_damage(&path, &d);
            g.last_seq = g.last_seq.max(d.hi);
            g.active.size = d.end;
            g.flushed = d.end;
            start = d.end;
            let base = g.active.base;
            g.note_damage(base, d);
        }
        // Rule 3a: a sealed segment shorter than the manifest says lost
        // its end: the sequences after its last intact message are lost.
        let written = manifest.as_ref().and_then(|m| m.sealed_size(base));
        if let Some(written) = written.filter(|w| !is_last && *w > len) {
            let reason = format!("the segment is {len} bytes long but {written} were written");
            match g.active.damage.last_mut().filter(|d| d.end >= len) {
                // The cut ran through a record: that damage reaches the end.
                Some(d) => {
                    d.end = written;
                    d.reason = reason;
                    let (lo, d) = (d.lo, d.clone());
                    if let Some(l) = g.losses.get_mut(&lo) {
                        l.reason = d.reason.clone();
                    }
                    warn_damage(&path, &d);
                }
                None => {
                    let hi = bases.get(i + 1).map_or(g.last_seq, |n| n - 1);
                    let d = Damage {
                        start: len,
                        end: written,
                        lo: g.last_seq + 1,
                        hi,
                        reason,
                    };
                    warn_damage(&path, &d);
                    g.last_seq = g.last_seq.max(hi);
                    g.note_damage(base, d);
                }
            }
            g.active.size = written;
            g.flushed = written;
        }
        scanned(len);
    }

    // Rule 3a: sequences a checkpoint saw durable are never reused, even
    // when the segments no longer hold them.
    if durable_last > g.last_seq {
        let lo = g.last_seq + 1;
        let reason = format!(
            "sequences up to {durable_last} were stored and synced (the checkpoint says so) \
             but the segments end at {}",
            g.last_seq
        );
        tracing::warn!(stream = name, lost = ?(lo..=durable_last), "{reason}");
        let segment = g.active.path.clone();
        let offset = g.active.size;
        g.note_loss(
            lo,
            Loss {
                hi: durable_last,
                segment,
                offset,
                reason,
            },
        );
        g.last_seq = durable_last;
    }
    if let Some(m) = &manifest {
        // Gaps `repair` recorded: deleted, as after `delete_message`.
        for &(lo, hi) in &m.gaps {
            g.last_seq = g.last_seq.max(hi);
            let lo = lo.max(g.first_seq);
            if lo <= hi {
                g.deleted.insert_range(lo, hi);
            }
        }
        if !m.gaps.is_empty() {
            if g.messages == 0 {
                g.first_seq = g.last_seq + 1;
                g.deleted.clear();
            } else {
                let first = g.first_seq;
                g.advance_first(first);
            }
        }
        g.gaps = m.gaps.clone();
        g.reserved = m.reserved;
    }
    g.reserve_step = manifest::reservation(env.segment_size);
    g.reserved = g
        .reserved
        .max(g.last_seq)
        .max(g.active.base.saturating_add(g.reserve_step));

    // Recovery succeeded: now, and only now, change files.
    let mut report = None;
    let read_only = storage.is_read_only();
    if let (true, Some((path, at, dropped, rewrite))) = (read_only, &truncation) {
        // A read-only open cuts nothing: the log ends where the tail starts.
        if *rewrite {
            g.active.size = SEGMENT_HEADER;
            g.flushed = SEGMENT_HEADER;
        }
        tracing::warn!(stream = name, segment = %path.display(), offset = at, bytes = dropped,
            "read-only open: a torn tail was left in place (a writable open truncates it)");
        report = Some((path.clone(), *dropped));
        truncation = None;
    }
    if let Some((path, at, dropped, rewrite)) = truncation {
        let file = g
            .active
            .file
            .clone()
            .ok_or_else(|| corrupt(&path, at, "segment not open"))?;
        let ctx = format!("truncating the torn tail of {}", path.display());
        file.set_len(at).map_err(io(ctx.clone()))?;
        if rewrite {
            file.write_all_at(&segment::header_bytes(), 0)
                .map_err(io(ctx.clone()))?;
            g.active.size = SEGMENT_HEADER;
            g.flushed = SEGMENT_HEADER;
        }
        // IMPORTANT: the cut is durable before appends continue after it.
        file.sync_data().map_err(io(ctx))?;
        tracing::warn!(stream = name, segment = %path.display(), offset = at, bytes_dropped = dropped,
            "recovery truncated a torn tail (a write that never completed)");
        report = Some((path, dropped));
    }
    g.recovering = false;
    g.remove_doomed(storage);
    if read_only {
        // Nothing is removed or rebuilt on disk; indexes live in memory.
        stray.clear();
    }
    if g.active.missing && !read_only {
        // The newest segment is gone: go on in a new one above everything
        // it may have held, so no sequence is assigned twice.
        let base = g.last_seq + 1;
        let path = segdir.join(segment::log_name(base));
        let ctx = format!("creating {}", path.display());
        let f = storage.create(&path).map_err(io(ctx.clone()))?;
        f.write_all_at(&segment::header_bytes(), 0)
            .and_then(|()| f.sync_data())
            .and_then(|()| storage.sync_dir(&segdir))
            .map_err(io(ctx))?;
        let mut active = SegmentMeta::new(base, path);
        active.file = Some(f);
        let mut gone = std::mem::replace(&mut g.active, active);
        gone.indexed = true;
        g.sealed.push_back(gone);
        g.flushed = SEGMENT_HEADER;
        g.reserved = g.reserved.max(base.saturating_add(g.reserve_step));
    }
    if !read_only && manifest.as_ref() != Some(&g.manifest()) {
        g.write_manifest(storage)
            .map_err(io(format!("writing the manifest of stream {name}")))?;
    }
    for p in stray {
        let _ = storage.remove_file(&p);
    }
    if !read_only {
        // Rule 6: the indexes rebuilt (in memory until now) are written.
        g.write_pinned_indexes(name, storage);
    }
    if g.config.max_msgs_per_subject.is_none() {
        g.subjects.stop_tracking();
    } else if !g.subjects.is_tracking() {
        g.rebuild_subject_seqs(storage)?;
    }
    // Rule 7: limits again (max_age included) after the scan.
    g.enforce_all(name, storage, now)?;
    g.remove_doomed(storage);
    g.dedup.expire(window_cutoff);
    let mut dedup = std::mem::take(&mut g.dedup);
    dedup.retain(|seq| g.is_live(seq));
    g.dedup = dedup;
    g.ckpt_needed = false;
    // The caller writes the checkpoint once the stream's consumers loaded
    // too: a store that fails to open changes nothing it need not.
    let stream = Stream::new(name.to_owned(), dir, env, g);
    Ok((stream, report))
}
