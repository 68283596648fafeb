//! Rooms: many peers talking on one subject, with or without history.
//!
//! A room named `general` lives on the subject `durabus.room.general`.
//!
//! * [`RoomPolicy::Ephemeral`]: core fan-out. Peers get what is sent while
//!   they are joined; there is no history.
//! * [`RoomPolicy::Persisted`]: the stream `ROOM_general` keeps the last
//!   messages ([`History`]: a count and/or an age), so a late joiner reads
//!   [`Member::scrollback`], and every peer has a durable consumer (named
//!   after the peer) so a peer that was away resumes with the first message
//!   after its last ack.
//!
//! A peer never receives its own messages from [`Member::next`] (a chat
//! shows what it sent itself); [`Member::scrollback`] is the room's history
//! and includes them. The sender's name travels in the [`ROOM_SENDER`]
//! header.
//!
//! Room and peer names that are not legal stream or consumer names (for
//! example with a `.` or a space) are sanitized and given a short hash of
//! the original, so `a.b` and `a_b` stay two rooms.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> durabus::Result<()> {
//! use durabus::room::{Room, RoomPolicy};
//! let bus = durabus::connect("memory:").await?;
//! let room = Room::open(&bus, "general", RoomPolicy::persisted()).await?;
//! let alice = room.join("alice").await?;
//! alice.send("hello").await?;
//! let mut bob = room.join("bob").await?;      // a late joiner
//! let history = bob.scrollback(10).await?;
//! assert_eq!(history[0].sender, "alice");
//! alice.send("welcome, bob").await?;
//! let m = bob.next().await.expect("open")?;
//! assert_eq!(&m.payload[..], b"welcome, bob");
//! bob.leave().await?;                         // bob resumes here next time
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use durabus_core::{
    sanitize, validate_stream_name, AckKind, ConsumerConfig, DeliverPolicy, Delivery, Error,
    Message, ReplayOptions, Result, StoredMessage, StreamConfig, Subscription,
};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};

use crate::Bus;

/// Header with the name of the peer that sent a room message.
pub const ROOM_SENDER: &str = "Durabus-Room-Sender";

/// The subject prefix of rooms: a room's subject is the prefix and its token.
pub const ROOM_SUBJECT_PREFIX: &str = "durabus.room.";

/// The prefix of a persisted room's stream name.
pub const ROOM_STREAM_PREFIX: &str = "ROOM_";

/// Longest room or peer token, in bytes (the stream name adds a prefix).
const MAX_TOKEN: usize = 200;

/// Longest room or peer name, in bytes (longer ones are hashed into a
/// token of at most [`MAX_TOKEN`] bytes, well within the name limits).
const MAX_ROOM_NAME_LEN: usize = 255;

/// Deliveries a persisted member fetches at once.
const FETCH_BATCH: usize = 32;

/// How long one fetch of a persisted member waits before fetching again.
const FETCH_WAIT: Duration = Duration::from_secs(1);

/// What a persisted room keeps for late joiners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct History {
    max_msgs: Option<u64>,
    max_age: Option<Duration>,
}

impl Default for History {
    /// The last 1000 messages, of any age.
    fn default() -> Self {
        History {
            max_msgs: Some(1000),
            max_age: None,
        }
    }
}

impl History {
    /// The last 1000 messages, of any age.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep at most the last `n` messages (`None`: no count limit).
    pub fn max_msgs(mut self, n: impl Into<Option<u64>>) -> Self {
        self.max_msgs = n.into();
        self
    }

    /// Keep messages at most this old (`None`: no age limit).
    pub fn max_age(mut self, age: impl Into<Option<Duration>>) -> Self {
        self.max_age = age.into();
        self
    }
}

/// Whether a room keeps history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomPolicy {
    /// Core fan-out: live peers only, no history, nothing stored.
    Ephemeral,
    /// A stream per room: scrollback for late joiners, and a durable
    /// consumer per peer so an absent peer resumes where it left.
    Persisted(History),
}

impl RoomPolicy {
    /// [`RoomPolicy::Persisted`] with the default [`History`].
    pub fn persisted() -> Self {
        RoomPolicy::Persisted(History::default())
    }
}

/// A message of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomMessage {
    /// The peer that sent it (empty if it was published without the
    /// [`ROOM_SENDER`] header).
    pub sender: String,
    /// What was sent.
    pub payload: Bytes,
    /// When the room stored it (persisted), or when it was received
    /// (ephemeral).
    pub time: SystemTime,
    /// Its sequence in the room's stream (persisted rooms only).
    pub seq: Option<u64>,
}

impl RoomMessage {
    fn stored(m: StoredMessage) -> Self {
        RoomMessage {
            sender: sender_of(&m.headers),
            payload: m.payload,
            time: m.time,
            seq: Some(m.seq),
        }
    }
}

fn sender_of(headers: &durabus_core::HeaderMap) -> String {
    headers.get(ROOM_SENDER).unwrap_or_default().to_owned()
}

/// A room on a [`Bus`]: [`Room::open`], then [`Room::join`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Room {
    bus: Bus,
    name: String,
    subject: String,
    stream: Option<String>,
}

impl Room {
    /// Opens room `name` with `policy`: a persisted room's stream is
    /// created if absent. An existing room stream with other history limits
    /// is [`Error::StreamNameInUse`].
    pub async fn open(bus: &Bus, name: impl AsRef<str>, policy: RoomPolicy) -> Result<Room> {
        let name = name.as_ref();
        let token = token("room", name)?;
        let subject = format!("{ROOM_SUBJECT_PREFIX}{token}");
        let stream = match policy {
            RoomPolicy::Ephemeral => None,
            RoomPolicy::Persisted(history) => {
                let mut config =
                    StreamConfig::new(format!("{ROOM_STREAM_PREFIX}{token}")).subjects([&subject]);
                config.max_msgs = history.max_msgs;
                config.max_age = history.max_age;
                Some(bus.create_stream(config).await?.config.name)
            }
        };
        Ok(Room {
            bus: bus.clone(),
            name: name.to_owned(),
            subject,
            stream,
        })
    }

    /// The room's name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subject its messages are published to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The stream of a persisted room.
    pub fn stream(&self) -> Option<&str> {
        self.stream.as_deref()
    }

    /// Joins as `peer`. In a persisted room the peer's durable consumer is
    /// created on its first join (starting with messages sent after it) and
    /// resumed on the next ones ([`Member::resumed`]). Peer names are
    /// non-empty, at most 255 bytes, without control characters.
    pub async fn join(&self, peer: impl AsRef<str>) -> Result<Member> {
        let peer = peer.as_ref();
        let consumer = token("peer", peer)?;
        let (inbox, resumed) = match &self.stream {
            None => (Inbox::Live(self.bus.subscribe(&self.subject).await?), false),
            Some(stream) => {
                let resumed = match self.bus.consumer_info(stream, &consumer).await {
                    Ok(_) => true,
                    Err(Error::ConsumerNotFound { .. }) => {
                        let config =
                            ConsumerConfig::durable(&consumer).deliver_policy(DeliverPolicy::New);
                        self.bus.create_consumer(stream, config).await?;
                        false
                    }
                    Err(e) => return Err(e),
                };
                let inbox = Inbox::Durable(Durable {
                    stream: stream.clone(),
                    consumer,
                    taken: VecDeque::new(),
                    step: None,
                    done: false,
                });
                (inbox, resumed)
            }
        };
        Ok(Member {
            room: self.clone(),
            sender: RoomSender {
                bus: self.bus.clone(),
                subject: self.subject.clone(),
                peer: peer.to_owned(),
                persisted: self.stream.is_some(),
            },
            inbox,
            resumed,
        })
    }

    /// The last `n` messages the room keeps, oldest first, every sender's
    /// included; always empty for an ephemeral room.
    pub async fn scrollback(&self, n: usize) -> Result<Vec<RoomMessage>> {
        let Some(stream) = &self.stream else {
            return Ok(Vec::new());
        };
        let last = self.bus.stream_info(stream).await?.state.last_seq;
        let n_u64 = u64::try_from(n).unwrap_or(u64::MAX);
        if n == 0 || last == 0 {
            return Ok(Vec::new());
        }
        let first = last.saturating_sub(n_u64 - 1).max(1);
        let mut replay = self
            .bus
            .replay(stream, ReplayOptions::from_seq(first).stop_at_end())
            .await?;
        let mut out = VecDeque::with_capacity(n.min(1024));
        while let Some(m) = replay.next().await {
            let m = m?;
            if m.seq > last {
                break;
            }
            if out.len() == n {
                out.pop_front();
            }
            out.push_back(RoomMessage::stored(m));
        }
        Ok(out.into())
    }

    /// Deletes `peer`'s durable consumer in a persisted room: its next join
    /// starts afresh. A no-op for an ephemeral room or an unknown peer.
    pub async fn remove_peer(&self, peer: impl AsRef<str>) -> Result<()> {
        let peer = peer.as_ref();
        let Some(stream) = &self.stream else {
            return Ok(());
        };
        match self
            .bus
            .delete_consumer(stream, &token("peer", peer)?)
            .await
        {
            Ok(()) | Err(Error::ConsumerNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Sends to a room as one peer; from [`Member::sender`], for a task other
/// than the one reading. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RoomSender {
    bus: Bus,
    subject: String,
    peer: String,
    persisted: bool,
}

impl RoomSender {
    /// Sends `payload` to the room; its sequence in a persisted room.
    pub async fn send(&self, payload: impl Into<Bytes>) -> Result<Option<u64>> {
        let m = Message::new(self.subject.clone(), payload).with_header(ROOM_SENDER, &*self.peer);
        match self.bus.publish_message(m).await? {
            Some(ack) => Ok(Some(ack.seq)),
            None if self.persisted => Err(Error::invalid_config(
                durabus_core::ConfigError::NoLongerCaptured {
                    subject: self.subject.to_string(),
                    consequence: "open the room again".into(),
                },
            )),
            None => Ok(None),
        }
    }

    /// The peer this sends as.
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

/// Where a member's messages come from.
#[derive(Debug)]
enum Inbox {
    Live(Subscription),
    Durable(Durable),
}

/// A persisted room's inbox: the peer's durable consumer, read in batches.
struct Durable {
    stream: String,
    consumer: String,
    /// Fetched, not yet handed out (acked when handed out).
    taken: VecDeque<Delivery>,
    /// The fetch or the ack in flight. It lives here, not in the future
    /// [`Member::next`] returns, so a cancelled call leaves it running for
    /// the next one: nothing fetched is dropped, nothing acked is lost.
    step: Option<BoxFuture<'static, Step>>,
    /// The consumer's stream is gone or the bus closed.
    done: bool,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("taken", &self.taken.len())
            .field("in_flight", &self.step.is_some())
            .finish()
    }
}

/// What a [`Durable`] inbox's in-flight step finished with.
enum Step {
    /// A fetch: the deliveries, in order.
    Fetched(Result<Vec<Delivery>>),
    /// The confirmed ack of the front of `taken`.
    Acked(Result<()>),
}

impl Durable {
    /// The next message from another peer than `me`: the front of `taken`
    /// once its ack is confirmed, else what a fetch brings.
    fn poll_next(
        &mut self,
        bus: &Bus,
        me: &str,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<RoomMessage>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if let Some(step) = &mut self.step {
                let finished = ready!(step.as_mut().poll(cx));
                self.step = None;
                match finished {
                    Step::Fetched(Ok(more)) => self.taken.extend(more),
                    Step::Fetched(Err(Error::Closed)) => {
                        self.done = true;
                        return Poll::Ready(None);
                    }
                    Step::Fetched(Err(e)) => return Poll::Ready(Some(Err(e))),
                    // A failed ack keeps the message in front: the next
                    // call acks it again (acking twice is a no-op).
                    Step::Acked(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Step::Acked(Ok(())) => {
                        let Some(d) = self.taken.pop_front() else {
                            continue;
                        };
                        let m = RoomMessage::stored(d.message);
                        if m.sender != me {
                            return Poll::Ready(Some(Ok(m)));
                        }
                    }
                }
                continue;
            }
            let backend = bus.backend().clone();
            self.step = Some(match self.taken.front() {
                // Acked before it leaves the buffer, so the next join
                // resumes after it.
                Some(d) => {
                    let ack = d.ack.clone();
                    Box::pin(
                        async move { Step::Acked(backend.ack_confirmed(&ack, AckKind::Ack).await) },
                    )
                }
                None => {
                    let (stream, consumer) = (self.stream.clone(), self.consumer.clone());
                    Box::pin(async move {
                        Step::Fetched(
                            backend
                                .fetch(&stream, &consumer, FETCH_BATCH, FETCH_WAIT)
                                .await,
                        )
                    })
                }
            });
        }
    }
}

/// A peer in a room, from [`Room::join`].
///
/// Its messages are a [`Stream`] ([`Member::next`] is the same without
/// importing `StreamExt`), and **cancel safe**: a `next()` dropped at any
/// point (in a `select!`, under a `timeout`) loses no message and does
/// not end the stream; the message comes with the next call, in order.
#[derive(Debug)]
pub struct Member {
    room: Room,
    sender: RoomSender,
    inbox: Inbox,
    resumed: bool,
}

impl Member {
    /// The peer's name.
    pub fn peer(&self) -> &str {
        &self.sender.peer
    }

    /// Whether this join resumed the peer's earlier place in a persisted
    /// room ([`Member::next`] then starts with what it missed, and
    /// [`Member::scrollback`] may show the same messages).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Sends `payload` to the room; its sequence in a persisted room.
    pub async fn send(&self, payload: impl Into<Bytes>) -> Result<Option<u64>> {
        self.sender.send(payload).await
    }

    /// A handle that sends as this peer, for another task.
    pub fn sender(&self) -> RoomSender {
        self.sender.clone()
    }

    /// The room's last `n` messages (see [`Room::scrollback`]).
    pub async fn scrollback(&self, n: usize) -> Result<Vec<RoomMessage>> {
        self.room.scrollback(n).await
    }

    /// The next message from another peer; `None` once the bus is closed.
    ///
    /// In a persisted room each message is acknowledged (confirmed) before
    /// it is handed out, so the peer's next join resumes after it. Cancel
    /// safe: the fetch or acknowledgement in flight when a call is dropped
    /// stays with the member and the next call finishes it, so the message
    /// is handed out then, once and in order.
    pub async fn next(&mut self) -> Option<Result<RoomMessage>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Leaves the room. In a persisted room the peer's consumer stays, so
    /// its next join resumes after the last message handed out; messages
    /// fetched but not handed out are given back at once (a fetch a
    /// cancelled [`Member::next`] left in flight is awaited first, up to
    /// its 1 s wait, so what it brings is given back too). A message whose
    /// acknowledgement a cancelled `next()` left in flight may already
    /// count as handed out.
    pub async fn leave(self) -> Result<()> {
        let Inbox::Durable(mut inbox) = self.inbox else {
            return Ok(());
        };
        if let Some(step) = inbox.step.take() {
            if let Step::Fetched(Ok(more)) = step.await {
                inbox.taken.extend(more);
            }
        }
        for d in inbox.taken {
            self.sender.bus.ack(&d, AckKind::Nak(None)).await?;
        }
        Ok(())
    }
}

impl Stream for Member {
    type Item = Result<RoomMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let me = this.sender.peer.as_str();
        match &mut this.inbox {
            Inbox::Live(sub) => loop {
                let Some(m) = ready!(sub.poll_next_unpin(cx)) else {
                    return Poll::Ready(None);
                };
                let sender = sender_of(&m.headers);
                if sender == me {
                    continue;
                }
                return Poll::Ready(Some(Ok(RoomMessage {
                    sender,
                    payload: m.payload,
                    time: SystemTime::now(),
                    seq: None,
                })));
            },
            Inbox::Durable(inbox) => inbox.poll_next(&this.sender.bus, me, cx),
        }
    }
}

/// The stream/consumer-legal token for a room or peer name: the name if it
/// is legal, else its sanitized form and a hash of the original.
fn token(kind: &str, name: &str) -> Result<String> {
    let bad = |reason: &str| Error::InvalidName {
        name: name.to_owned(),
        reason: format!("{kind} name {reason}"),
    };
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > MAX_ROOM_NAME_LEN {
        return Err(bad("is longer than 255 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    if name.len() <= MAX_TOKEN && validate_stream_name(name).is_ok() {
        return Ok(name.to_owned());
    }
    let mut base = sanitize(name);
    let mut cut = MAX_TOKEN - 9;
    while !base.is_char_boundary(cut.min(base.len())) {
        cut -= 1;
    }
    base.truncate(cut);
    Ok(format!("{base}_{:08x}", fnv1a(name.as_bytes())))
}

/// 32-bit FNV-1a: stable across versions and platforms, for names.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_names_are_kept_and_others_never_collide() {
        assert_eq!(token("room", "general").unwrap(), "general");
        let a = token("room", "a.b").unwrap();
        assert_ne!(a, token("room", "a_b").unwrap());
        assert!(validate_stream_name(&format!("{ROOM_STREAM_PREFIX}{a}")).is_ok());
        let long = token("peer", &"é".repeat(120)).unwrap();
        assert!(long.len() <= MAX_TOKEN, "{}", long.len());
        assert!(validate_stream_name(&long).is_ok());
        for bad in ["", "a\nb", &"x".repeat(256)] {
            assert!(token("peer", bad).is_err(), "{bad:?}");
        }
    }
}
