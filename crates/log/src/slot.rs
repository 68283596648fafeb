//! A stream as the store knows it before and after it is opened: its
//! catalog entry (routing subjects, config, creation time, summary) and,
//! once recovered, the stream itself (docs/design.md, "Catalog").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use durabus_core::{
    subject, Error, Result, RetentionPolicy, StreamConfig, StreamInfo, StreamState,
};

use crate::catalog::{Entry, Summary};
use crate::consumer::StreamConsumers;
use crate::stream::{from_system_time, to_system_time};

/// What the catalog says of a stream.
#[derive(Debug)]
struct Meta {
    subjects: Vec<String>,
    created_ns: i64,
    /// Its config as JSON (decoded on demand into `config`).
    config_json: Vec<u8>,
    config: Option<StreamConfig>,
    summary: Option<Summary>,
}

/// One stream of the store, opened or not.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: String,
    /// A file stream (in the catalog); a memory stream is open from its
    /// creation and never in the catalog.
    pub(crate) file: bool,
    meta: RwLock<Meta>,
    stream: OnceLock<Arc<StreamConsumers>>,
    /// Held while the stream is recovered (exactly once) or deleted.
    opening: Mutex<()>,
    /// Marked in the catalog journal (this session or one that did not
    /// close cleanly): its summary is not to be trusted.
    dirty: AtomicBool,
}

fn encode_config(config: &StreamConfig) -> Result<Vec<u8>> {
    serde_json::to_vec(config).map_err(|e| Error::internal(format!("encoding stream config: {e}")))
}

impl Slot {
    /// A stream the catalog lists, not open yet.
    pub(crate) fn from_entry(e: Entry, dirty: bool) -> Slot {
        Slot {
            name: e.name,
            file: true,
            meta: RwLock::new(Meta {
                subjects: e.subjects,
                created_ns: e.created_ns,
                config_json: e.config,
                config: None,
                summary: if dirty { None } else { e.summary },
            }),
            stream: OnceLock::new(),
            opening: Mutex::new(()),
            dirty: AtomicBool::new(dirty),
        }
    }

    /// A stream already open (created, or recovered at open). `dirty`: its
    /// summary, when it closes, must be written before it can be trusted.
    pub(crate) fn opened(stream: Arc<StreamConsumers>, file: bool) -> Result<Slot> {
        let info = stream.stream.info();
        let slot = Slot {
            name: stream.name.clone(),
            file,
            meta: RwLock::new(Meta {
                subjects: info.config.effective_subjects(),
                created_ns: from_system_time(info.created),
                config_json: encode_config(&info.config)?,
                config: Some(info.config),
                summary: None,
            }),
            stream: OnceLock::new(),
            opening: Mutex::new(()),
            dirty: AtomicBool::new(true),
        };
        let _ = slot.stream.set(stream);
        Ok(slot)
    }

    fn meta(&self) -> std::sync::RwLockReadGuard<'_, Meta> {
        self.meta.read().unwrap_or_else(|e| e.into_inner())
    }

    fn meta_mut(&self) -> std::sync::RwLockWriteGuard<'_, Meta> {
        self.meta.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream, once recovered.
    pub(crate) fn get(&self) -> Option<&Arc<StreamConsumers>> {
        self.stream.get()
    }

    /// Records the stream just recovered.
    pub(crate) fn set(&self, stream: Arc<StreamConsumers>) {
        let _ = self.stream.set(stream);
    }

    /// Held while recovering or deleting the stream.
    pub(crate) fn opening(&self) -> MutexGuard<'_, ()> {
        self.opening.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Marked: the summary goes.
    pub(crate) fn set_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
        self.meta_mut().summary = None;
    }

    /// Whether one of its subjects matches the publish subject `subj`.
    pub(crate) fn captures(&self, subj: &str) -> bool {
        self.meta()
            .subjects
            .iter()
            .any(|f| subject::matches(f, subj))
    }

    /// Its effective subjects.
    pub(crate) fn subjects(&self) -> Vec<String> {
        self.meta().subjects.clone()
    }

    /// Its config: the open stream's, or the catalog's.
    pub(crate) fn config(&self) -> Result<StreamConfig> {
        if let Some(s) = self.get() {
            return Ok(s.config());
        }
        if let Some(c) = &self.meta().config {
            return Ok(c.clone());
        }
        let mut m = self.meta_mut();
        let c: StreamConfig = serde_json::from_slice(&m.config_json).map_err(|e| {
            Error::internal(format!(
                "the catalog's config of stream {} does not decode: {e}",
                self.name
            ))
        })?;
        m.config = Some(c.clone());
        Ok(c)
    }

    /// Records a new config (and creation time).
    pub(crate) fn set_config(&self, config: &StreamConfig, created_ns: i64) -> Result<()> {
        let json = encode_config(config)?;
        let mut m = self.meta_mut();
        m.subjects = config.effective_subjects();
        m.config_json = json;
        m.config = Some(config.clone());
        m.created_ns = created_ns;
        Ok(())
    }

    /// Its catalog entry as it is to be written now: the summary only
    /// when it is unmarked and not open (an open stream changes).
    pub(crate) fn entry(&self) -> Entry {
        let m = self.meta();
        Entry {
            name: self.name.clone(),
            subjects: m.subjects.clone(),
            created_ns: m.created_ns,
            config: m.config_json.clone(),
            summary: if self.is_dirty() || self.get().is_some() {
                None
            } else {
                m.summary.clone()
            },
        }
    }

    /// Its catalog entry at a clean close: `summary` for an open stream
    /// (what [`summary_at_close`] found), the kept one for a stream that
    /// was not opened.
    pub(crate) fn entry_at_close(&self, summary: Option<Summary>) -> Entry {
        let mut e = self.entry();
        if self.get().is_some() {
            e.summary = summary;
        }
        e
    }

    /// What `list_streams` reports for the stream without opening it:
    /// `None` unless the catalog's summary is still true (the stream
    /// closed cleanly, nothing marked it since, and no message of it has
    /// reached its `max_age` by `now_ns`).
    pub(crate) fn trusted_info(&self, now_ns: i64) -> Option<StreamInfo> {
        let (summary, config) = self.trusted(now_ns)?;
        let created = to_system_time(self.meta().created_ns);
        Some(StreamInfo {
            config,
            created,
            state: StreamState {
                messages: summary.messages,
                bytes: summary.bytes,
                first_seq: summary.first_seq,
                first_time: summary.first_time_ns.map(to_system_time),
                last_seq: summary.last_seq,
                last_time: summary.last_time_ns.map(to_system_time),
                num_deleted: summary.num_deleted,
                num_lost: 0,
                num_subjects: summary.num_subjects,
                consumer_count: summary.consumer_count,
            },
        })
    }

    /// The summary and config behind [`Slot::trusted_info`], when the
    /// summary can be trusted.
    pub(crate) fn trusted(&self, now_ns: i64) -> Option<(Summary, StreamConfig)> {
        if self.is_dirty() {
            return None;
        }
        let summary = self.meta().summary.clone()?;
        let config = self.config().ok()?;
        if let Some(age) = config.max_age {
            if summary.messages > 0 {
                let age = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
                // A second of margin: the open re-applies max_age by its
                // own clock reading.
                let first = summary.first_time_ns?;
                if first.saturating_add(age) <= now_ns.saturating_add(1_000_000_000) {
                    return None;
                }
            }
        }
        Some((summary, config))
    }

    /// From when `max_age` may make the summary of `entry` (this stream's)
    /// untrue: the catalog index's hint, so the maintenance thread need
    /// not read an untaken entry to know whether to open it.
    pub(crate) fn due_ns(&self, entry: &Entry) -> i64 {
        let Ok(config) = self.config() else {
            return i64::MIN;
        };
        let Some(age) = config.max_age else {
            return i64::MAX;
        };
        match &entry.summary {
            None => i64::MIN,
            Some(s) if s.messages == 0 => i64::MAX,
            Some(s) => s.first_time_ns.map_or(i64::MIN, |first| {
                let age = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
                // The margin `trusted_info` gives.
                first.saturating_add(age).saturating_sub(1_000_000_000)
            }),
        }
    }

    /// Whether the summary may have expired messages by `now_ns` (the
    /// stream is to be opened so max_age removes them).
    pub(crate) fn expiry_due(&self, now_ns: i64) -> bool {
        if self.get().is_some() || self.is_dirty() {
            return false;
        }
        let has_age = self.config().is_ok_and(|c| c.max_age.is_some());
        has_age && self.trusted_info(now_ns).is_none()
    }
}

/// The summary a cleanly closed stream leaves in the catalog, or `None`
/// when a reopen could find another state than the one in memory: its
/// writes failed (poisoned), it knows of lost sequences (damage found by a
/// read, which a checkpointed reopen would not find again), a consumer
/// could not be loaded, or ephemeral consumers held messages of an
/// interest or work-queue stream (retention re-derived at open, without
/// them, removes more).
pub(crate) fn summary_at_close(s: &StreamConsumers) -> Option<Summary> {
    if s.is_poisoned() || !s.consumers.unavailable().is_empty() {
        return None;
    }
    let (durable, ephemeral) = s.consumers.counts();
    let info = s.stream.info();
    if info.state.num_lost > 0
        || (ephemeral > 0 && info.config.retention != RetentionPolicy::Limits)
    {
        return None;
    }
    let st = info.state;
    Some(Summary {
        messages: st.messages,
        bytes: st.bytes,
        first_seq: st.first_seq,
        first_time_ns: st.first_time.map(from_system_time),
        last_seq: st.last_seq,
        last_time_ns: st.last_time.map(from_system_time),
        num_deleted: st.num_deleted,
        num_subjects: st.num_subjects,
        consumer_count: durable,
    })
}

/// The entry of a stream about to be created.
pub(crate) fn new_entry(config: &StreamConfig, created_ns: i64) -> Result<Entry> {
    Ok(Entry {
        name: config.name.clone(),
        subjects: config.effective_subjects(),
        created_ns,
        config: encode_config(config)?,
        summary: None,
    })
}
