//! The route cache: which stream captures a subject, so a publish knows
//! whether it is a JetStream publish (and to which stream) without asking.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use durabus_core::{subject, ByteString, StreamInfo};

/// What durabus remembers of a stream to route publishes.
#[derive(Debug)]
pub(super) struct Route {
    /// The stream's name.
    pub(super) name: String,
    /// `name` as publish acks carry it (shared, not copied per ack).
    pub(super) label: ByteString,
    subjects: Vec<String>,
    pub(super) max_msg_size: Option<u32>,
}

/// Most literal subjects remembered with their stream; past it the memo
/// starts over.
const MEMO_SUBJECTS: usize = 4096;

/// The route cache.
#[derive(Default)]
struct Routes {
    /// Stream name -> its route.
    streams: HashMap<String, Arc<Route>>,
    /// Literal subject -> the route capturing it, so a subject published
    /// before is validated and matched once. Cleared whenever `streams`
    /// changes.
    memo: HashMap<String, Arc<Route>>,
}

/// Stream name -> subjects, for deciding JetStream vs core publish.
#[derive(Default)]
pub(super) struct RouteCache(RwLock<Routes>);

impl RouteCache {
    pub(super) fn remember(&self, info: &StreamInfo) {
        if let Ok(mut routes) = self.0.write() {
            let route = Route {
                name: info.config.name.clone(),
                label: ByteString::from(info.config.name.as_str()),
                subjects: info.config.effective_subjects(),
                max_msg_size: info.config.max_msg_size,
            };
            routes
                .streams
                .insert(info.config.name.clone(), Arc::new(route));
            routes.memo.clear();
        }
    }

    pub(super) fn forget(&self, stream: &str) {
        if let Ok(mut routes) = self.0.write() {
            routes.streams.remove(stream);
            routes.memo.clear();
        }
    }

    /// The route of a subject published before (so known to be valid): one
    /// hash lookup, no validation, no matching.
    pub(super) fn memoized(&self, subject: &str) -> Option<Arc<Route>> {
        self.0.read().ok()?.memo.get(subject).cloned()
    }

    /// The cached stream capturing the valid literal `subject`, remembered
    /// in the memo.
    pub(super) fn cached_route(&self, subject: &str) -> Option<Arc<Route>> {
        let hit = {
            let routes = self.0.read().ok()?;
            if let Some(hit) = routes.memo.get(subject) {
                return Some(hit.clone());
            }
            routes
                .streams
                .values()
                .find(|r| r.subjects.iter().any(|f| subject::matches(f, subject)))
                .cloned()?
        };
        if let Ok(mut routes) = self.0.write() {
            // Unless the stream was forgotten or replaced meanwhile.
            if routes
                .streams
                .get(&hit.name)
                .is_some_and(|r| Arc::ptr_eq(r, &hit))
            {
                if routes.memo.len() >= MEMO_SUBJECTS {
                    routes.memo.clear();
                }
                routes.memo.insert(subject.to_owned(), hit.clone());
            }
        }
        Some(hit)
    }
}
