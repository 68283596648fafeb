//! Core (non-persistent) pub/sub: live subscriptions with wildcards and queue
//! groups, bounded per-subscriber buffers and slow-consumer signals
//! (invariant 12).

use crate::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use durabus_core::{subject, ArgumentError, Error, Event, Message, Origin, Result, Subscription};
use tokio::sync::{broadcast, mpsc};

use crate::sublist::Sublist;

struct Sub {
    id: u64,
    filter: String,
    queue: Option<String>,
    /// Messages this origin publishes are not delivered here.
    origin: Option<Origin>,
    tx: mpsc::Sender<Arc<Message>>,
    dropped: Arc<AtomicU64>,
    last_event: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Table {
    literal: HashMap<String, Vec<Arc<Sub>>>,
    /// Filters with wildcards, by token.
    wild: Sublist<Arc<Sub>>,
    /// Round-robin counters of queue groups.
    rr: HashMap<String, Arc<AtomicUsize>>,
}

/// The subscription table of a store.
pub(crate) struct Router {
    /// Live subscriptions; 0 makes routing a single atomic load (the fast path).
    count: AtomicUsize,
    table: RwLock<Table>,
    next_id: AtomicU64,
    buffer: usize,
    events: broadcast::Sender<Event>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("subscriptions", &self.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Removes a subscription from the table when its stream is dropped, so
/// finished subscriptions (e.g. request inboxes) leave nothing behind.
struct Unsubscribe {
    router: Weak<Router>,
    id: u64,
    filter: String,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(router) = self.router.upgrade() {
            router.remove_one(self.id, &self.filter);
        }
    }
}

/// Ties a visitor's subscriptions to the table they are borrowed from.
fn for_table<'t, F: FnMut(&'t Arc<Sub>)>(_: &'t Table, f: F) -> F {
    f
}

const SLOW_EVENT_INTERVAL: Duration = Duration::from_secs(1);

impl Router {
    pub(crate) fn new(buffer: usize, events: broadcast::Sender<Event>) -> Self {
        Self {
            count: AtomicUsize::new(0),
            table: RwLock::new(Table::default()),
            next_id: AtomicU64::new(1),
            buffer: buffer.max(1),
            events,
        }
    }

    /// A new live subscription; dropping it removes it from the table. With
    /// an `origin`, it does not get what that origin publishes.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        filter: &str,
        queue: Option<&str>,
        origin: Option<Origin>,
    ) -> Result<Subscription> {
        subject::validate_filter(filter)?;
        if let Some(q) = queue {
            if q.is_empty() || q.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::invalid_argument(ArgumentError::QueueGroup {
                    group: q.to_string(),
                }));
            }
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        let dropped = Arc::new(AtomicU64::new(0));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sub = Arc::new(Sub {
            id,
            filter: filter.to_owned(),
            queue: queue.map(str::to_owned),
            origin,
            tx,
            dropped: dropped.clone(),
            last_event: Mutex::new(None),
        });
        {
            let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
            if let Some(q) = queue {
                t.rr.entry(q.to_owned()).or_default();
            }
            if subject::has_wildcards(filter) {
                t.wild.insert(filter, sub);
            } else {
                t.literal.entry(filter.to_owned()).or_default().push(sub);
            }
            self.count.fetch_add(1, Ordering::AcqRel);
        }
        let guard = Unsubscribe {
            router: Arc::downgrade(self),
            id,
            filter: filter.to_owned(),
        };
        let stream = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            let m = rx.recv().await?;
            Some((m, (rx, guard)))
        });
        Ok(Subscription::new_shared(filter, Box::pin(stream), dropped))
    }

    /// Delivers `msg`, published by `origin` if it has one, to the
    /// subscribers matching its subject (but that origin's own); returns
    /// how many accepted or dropped it (0: nobody listens).
    pub(crate) fn deliver(&self, msg: &Message, origin: Option<Origin>) -> usize {
        self.deliver_on(&msg.subject, msg, origin)
    }

    /// As [`Router::deliver`], to the subscribers matching the literal
    /// subject `to` rather than the message's own.
    pub(crate) fn deliver_on(&self, to: &str, msg: &Message, origin: Option<Origin>) -> usize {
        if self.count.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut matched = 0;
        let mut closed: Vec<Arc<Sub>> = Vec::new();
        // One copy for every subscriber, made when the first takes it.
        let mut shared: Option<Arc<Message>> = None;
        {
            let t = self.table.read().unwrap_or_else(|e| e.into_inner());
            let mut groups: Vec<(&str, Vec<&Arc<Sub>>)> = Vec::new();
            let mut each = for_table(&t, |sub| match &sub.queue {
                _ if origin.is_some() && sub.origin == origin => {}
                None => {
                    if self.send(sub, msg, &mut shared) {
                        matched += 1;
                    } else {
                        closed.push(sub.clone());
                    }
                }
                Some(q) => match groups.iter_mut().find(|(name, _)| name == q) {
                    Some((_, members)) => members.push(sub),
                    None => groups.push((q.as_str(), vec![sub])),
                },
            });
            if let Some(subs) = t.literal.get(to) {
                subs.iter().for_each(&mut each);
            }
            t.wild.for_each_match(to, &mut each);
            for (name, members) in groups {
                let start =
                    t.rr.get(name)
                        .map_or(0, |c| c.fetch_add(1, Ordering::Relaxed));
                // One member per group, round-robin; skip members that are gone.
                for k in 0..members.len() {
                    let sub = members[(start + k) % members.len()];
                    if self.send(sub, msg, &mut shared) {
                        matched += 1;
                        break;
                    }
                    closed.push(sub.clone());
                }
            }
        }
        for sub in closed {
            self.remove_one(sub.id, &sub.filter);
        }
        matched
    }

    /// false when the subscriber is gone.
    fn send(&self, sub: &Sub, msg: &Message, shared: &mut Option<Arc<Message>>) -> bool {
        let m = shared.get_or_insert_with(|| Arc::new(msg.clone())).clone();
        match sub.tx.try_send(m) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = sub.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let mut last = sub.last_event.lock().unwrap_or_else(|e| e.into_inner());
                let due = last.is_none_or(|t| t.elapsed() >= SLOW_EVENT_INTERVAL);
                if due {
                    *last = Some(Instant::now());
                    let _ = self.events.send(Event::SlowConsumer {
                        filter: sub.filter.clone(),
                        dropped,
                    });
                    tracing::warn!(filter = %sub.filter, dropped, "slow consumer: messages dropped");
                }
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether a message on the literal `subject` would reach a live
    /// subscriber.
    pub(crate) fn has_interest(&self, subject: &str) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        let live = |sub: &Arc<Sub>| !sub.tx.is_closed();
        if t.literal
            .get(subject)
            .is_some_and(|subs| subs.iter().any(live))
        {
            return true;
        }
        let mut any = false;
        t.wild.for_each_match(subject, &mut |sub| any |= live(sub));
        any
    }

    /// Live subscriptions.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Removes one subscription, looked up by its filter.
    fn remove_one(&self, id: u64, filter: &str) {
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        let before;
        let after;
        if subject::has_wildcards(filter) {
            before = t.wild.len();
            t.wild.remove(filter, |s| s.id == id);
            after = t.wild.len();
        } else {
            let Some(subs) = t.literal.get_mut(filter) else {
                return;
            };
            before = subs.len();
            subs.retain(|s| s.id != id);
            after = subs.len();
            if after == 0 {
                t.literal.remove(filter);
            }
        }
        self.count.fetch_sub(before - after, Ordering::AcqRel);
    }

    /// Ends every subscription (store closed).
    pub(crate) fn close(&self) {
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        *t = Table::default();
        self.count.store(0, Ordering::Release);
    }
}
