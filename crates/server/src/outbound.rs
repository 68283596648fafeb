//! A connection's writer: an encoder task that owns the connection's live
//! subscriptions and its table of `sid`s and turns whatever is ready
//! (frames sent to it, messages of its subscriptions) into protocol bytes
//! in chunks, and a socket task that writes the chunks in order. A burst
//! costs one write, not one per message, and the encoder never waits for
//! the client: what piles up is bounded in bytes (a slow consumer is
//! closed), never by dropping a subscription's messages while the client
//! reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use durabus_core::{subject, Message, Subscription};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt as _, StreamMap};
use tokio_util::sync::CancellationToken;

use crate::proto;

/// One subscription of a connection.
#[derive(Debug)]
pub(crate) struct SubEntry {
    pub(crate) filter: String,
    /// Remove after this many messages in total (`UNSUB <sid> <max>`).
    pub(crate) max: Option<u64>,
    pub(crate) delivered: u64,
}

/// A connection's subscriptions by sid, shared by its reader (SUB, UNSUB,
/// finding the sid a reply goes to) and its writer (counting deliveries).
#[derive(Debug, Default)]
pub(crate) struct SubTable(Mutex<HashMap<Bytes, SubEntry>>);

impl SubTable {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<Bytes, SubEntry>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sids of subscriptions matching the literal `subject`.
    pub(crate) fn matching(&self, subject: &str) -> Vec<Bytes> {
        self.matching_unlimited(subject).0
    }

    /// The sids of subscriptions matching the literal `subject`, and
    /// whether any of them ends after a number of messages (`UNSUB <sid>
    /// <max>`), so its deliveries must be counted one by one.
    pub(crate) fn matching_unlimited(&self, subject: &str) -> (Vec<Bytes>, bool) {
        let t = self.lock();
        let mut limited = false;
        let sids = t
            .iter()
            .filter(|(_, e)| subject::matches(&e.filter, subject))
            .map(|(sid, e)| {
                limited |= e.max.is_some();
                sid.clone()
            })
            .collect();
        (sids, limited)
    }

    /// Counts `n` deliveries to `sid` (not limited by a max); false when
    /// it is gone.
    fn count_many(&self, sid: &Bytes, n: u64) -> bool {
        match self.lock().get_mut(sid) {
            Some(e) => {
                e.delivered += n;
                true
            }
            None => false,
        }
    }

    /// Counts one delivery to `sid`; false when it is gone or past its max
    /// (it is removed once its max is reached).
    fn count(&self, sid: &Bytes) -> Deliver {
        let mut t = self.lock();
        let Some(e) = t.get_mut(sid) else {
            return Deliver::Drop;
        };
        e.delivered += 1;
        match e.max {
            Some(max) if e.delivered >= max => {
                t.remove(sid);
                Deliver::Last
            }
            _ => Deliver::Yes,
        }
    }
}

enum Deliver {
    Yes,
    /// The last one its max allows: deliver, then end the subscription.
    Last,
    Drop,
}

/// What the writer is asked to do.
pub(crate) enum Out {
    /// Bytes to write as they are (INFO, +OK, -ERR).
    Frame(Bytes),
    /// A PONG: written after the subscriptions' messages that are already
    /// waiting, so a client's flush sees every message routed before it.
    Pong,
    /// A whole `MSG`/`HMSG` for subscription `sid`, counted against it.
    Msg { sid: Bytes, frame: Bytes },
    /// `count` whole `MSG`s for subscription `sid`, which has no max.
    Msgs {
        sid: Bytes,
        frame: Bytes,
        count: u64,
    },
    /// A new subscription's messages, written as `MSG`s for `sid`.
    Sub { sid: Bytes, sub: Subscription },
    /// End subscription `sid`.
    Unsub { sid: Bytes },
    /// Write `-ERR '<text>'` (when given), then close the connection.
    Close(Option<String>),
}

/// A handle to a connection's writer.
#[derive(Clone)]
pub(crate) struct Outbound {
    tx: mpsc::UnboundedSender<Out>,
    /// Bytes queued and not yet written.
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    /// Cancelled when the connection ends (by either side).
    pub(crate) closed: CancellationToken,
}

impl Outbound {
    /// Queues `out`. A connection with more than `max_pending` bytes
    /// waiting is closed as a slow consumer, as nats-server does.
    pub(crate) fn send(&self, out: Out) {
        let len = match &out {
            Out::Frame(b) | Out::Msg { frame: b, .. } | Out::Msgs { frame: b, .. } => b.len(),
            _ => 0,
        };
        if len > 0 && self.pending.fetch_add(len, Ordering::AcqRel) + len > self.max_pending {
            tracing::warn!(
                "slow consumer: closing a connection with too much waiting to be written"
            );
            self.closed.cancel();
            return;
        }
        let _ = self.tx.send(out);
    }

    /// Queues bytes to write as they are.
    pub(crate) fn frame(&self, bytes: impl Into<Bytes>) {
        self.send(Out::Frame(bytes.into()));
    }

    /// Asks the writer to send `-ERR '<text>'` and close.
    pub(crate) fn close_with(&self, err: Option<String>) {
        let _ = self.tx.send(Out::Close(err));
    }
}

/// Starts a connection's writer on `w`; it ends when the connection is
/// closed or every [`Outbound`] handle is dropped.
pub(crate) fn spawn_writer<W>(
    w: W,
    subs: Arc<SubTable>,
    headers: Arc<std::sync::atomic::AtomicBool>,
    max_pending: usize,
    closed: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Outbound
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let out = Outbound {
        tx,
        pending: Arc::new(AtomicUsize::new(0)),
        max_pending,
        closed: closed.clone(),
    };
    let (chunks, chunks_rx) = mpsc::unbounded_channel();
    let socket_pending = Arc::new(AtomicUsize::new(0));
    let abort = CancellationToken::new();
    tracker.spawn(socket_loop(
        w,
        chunks_rx,
        socket_pending.clone(),
        abort.clone(),
    ));
    let writer = Writer {
        chunks,
        socket_pending,
        max_pending,
        abort,
        rx,
        subs,
        headers,
        pending: out.pending.clone(),
        streams: StreamMap::new(),
        buf: BytesMut::with_capacity(64 * 1024),
        closed,
    };
    tracker.spawn(writer.run());
    out
}

/// Writes the chunks the encoder made, in order, until the encoder is done
/// (then flushes and shuts the socket down) or the connection is aborted.
async fn socket_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut chunks: mpsc::UnboundedReceiver<Bytes>,
    pending: Arc<AtomicUsize>,
    abort: CancellationToken,
) {
    let write = async {
        while let Some(chunk) = chunks.recv().await {
            if w.write_all(&chunk).await.is_err() {
                return;
            }
            pending.fetch_sub(chunk.len(), Ordering::AcqRel);
        }
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    };
    tokio::select! {
        () = abort.cancelled() => {}
        () = write => {}
    }
}

/// A subscription read without copying its messages: the store's router
/// hands every subscriber the same copy, written from it to each client.
struct Shared(Subscription);

impl Stream for Shared {
    type Item = Arc<Message>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Arc<Message>>> {
        self.0.poll_next_shared(cx)
    }
}

/// Most items gathered into one chunk.
const BATCH: usize = 1024;
/// Most bytes gathered into one chunk.
const BATCH_BYTES: usize = 64 * 1024;

/// The encoder: turns what the connection is sent into protocol bytes and
/// hands them to the socket task, so it never waits for the client and a
/// subscription's queue is drained as fast as it fills. A client that lets
/// more than `max_pending` bytes pile up is a slow consumer: the connection
/// is closed, as nats-server closes it.
struct Writer {
    chunks: mpsc::UnboundedSender<Bytes>,
    /// Bytes handed to the socket task and not written yet.
    socket_pending: Arc<AtomicUsize>,
    max_pending: usize,
    /// Stops the socket task at once (a slow consumer).
    abort: CancellationToken,
    rx: mpsc::UnboundedReceiver<Out>,
    subs: Arc<SubTable>,
    /// The client understands headers (CONNECT `headers`).
    headers: Arc<std::sync::atomic::AtomicBool>,
    pending: Arc<AtomicUsize>,
    streams: StreamMap<Bytes, Shared>,
    buf: BytesMut,
    closed: CancellationToken,
}

enum Step {
    Go,
    Close,
}

/// What woke the writer.
enum First {
    Closed,
    Out(Out),
    Msg(Bytes, Arc<Message>),
}

impl Writer {
    async fn run(mut self) {
        loop {
            let first = tokio::select! {
                biased;
                () = self.closed.cancelled() => First::Closed,
                out = self.rx.recv() => match out {
                    Some(out) => First::Out(out),
                    None => First::Closed,
                },
                Some((sid, m)) = self.streams.next(), if !self.streams.is_empty() => {
                    First::Msg(sid, m)
                }
            };
            // Everything else that is ready, polled with this task's own
            // waker (a no-op waker here would lose the wake-up of a
            // subscription that stays pending).
            let mut first = Some(first);
            let step = std::future::poll_fn(|cx| {
                let step = match first.take() {
                    Some(First::Closed) | None => self.closing(cx),
                    Some(First::Out(out)) => match self.apply(out, cx) {
                        Step::Go => self.gather(cx),
                        Step::Close => Step::Close,
                    },
                    Some(First::Msg(sid, m)) => {
                        self.message(&sid, &m);
                        self.gather(cx)
                    }
                };
                Poll::Ready(step)
            })
            .await;
            if !self.buf.is_empty() {
                let chunk = self.buf.split().freeze();
                let len = chunk.len();
                let waiting = self.socket_pending.fetch_add(len, Ordering::AcqRel) + len;
                if waiting > self.max_pending {
                    tracing::warn!(
                        waiting,
                        "slow consumer: closing a connection whose client does not read"
                    );
                    self.abort.cancel();
                    break;
                }
                if self.chunks.send(chunk).is_err() {
                    // The socket failed.
                    break;
                }
            }
            if matches!(step, Step::Close) {
                break;
            }
        }
        // Dropping `chunks` lets the socket task write what is left, then
        // shut the socket down.
        self.closed.cancel();
    }

    /// The connection is closing: what was queued before the close (acks,
    /// -ERR) is still written.
    fn closing(&mut self, cx: &mut Context<'_>) -> Step {
        while let Ok(out) = self.rx.try_recv() {
            if matches!(self.apply(out, cx), Step::Close) {
                break;
            }
        }
        Step::Close
    }

    /// The next ready message of a subscription, if any.
    fn ready_message(&mut self, cx: &mut Context<'_>) -> Option<(Bytes, Arc<Message>)> {
        if self.streams.is_empty() {
            return None;
        }
        match Pin::new(&mut self.streams).poll_next(cx) {
            Poll::Ready(Some(item)) => Some(item),
            _ => None,
        }
    }

    /// Takes whatever else is ready without waiting.
    fn gather(&mut self, cx: &mut Context<'_>) -> Step {
        for _ in 0..BATCH {
            if self.buf.len() >= BATCH_BYTES {
                break;
            }
            if let Ok(out) = self.rx.try_recv() {
                if matches!(self.apply(out, cx), Step::Close) {
                    return Step::Close;
                }
                continue;
            }
            match self.ready_message(cx) {
                Some((sid, m)) => self.message(&sid, &m),
                None => break,
            }
        }
        Step::Go
    }

    /// Writes the subscriptions' messages that are ready, so a PONG queued
    /// after them is written after them.
    fn drain_streams(&mut self, cx: &mut Context<'_>) {
        for _ in 0..BATCH {
            match self.ready_message(cx) {
                Some((sid, m)) => self.message(&sid, &m),
                None => return,
            }
        }
    }

    fn apply(&mut self, out: Out, cx: &mut Context<'_>) -> Step {
        match out {
            Out::Frame(b) => {
                self.pending.fetch_sub(b.len(), Ordering::AcqRel);
                self.buf.extend_from_slice(&b);
            }
            Out::Pong => {
                self.drain_streams(cx);
                self.buf.extend_from_slice(proto::PONG);
            }
            Out::Msg { sid, frame } => {
                self.pending.fetch_sub(frame.len(), Ordering::AcqRel);
                match self.subs.count(&sid) {
                    Deliver::Yes => self.buf.extend_from_slice(&frame),
                    Deliver::Last => {
                        self.buf.extend_from_slice(&frame);
                        self.streams.remove(&sid);
                    }
                    Deliver::Drop => {}
                }
            }
            Out::Msgs { sid, frame, count } => {
                self.pending.fetch_sub(frame.len(), Ordering::AcqRel);
                if self.subs.count_many(&sid, count) {
                    self.buf.extend_from_slice(&frame);
                }
            }
            Out::Sub { sid, sub } => {
                self.streams.insert(sid, Shared(sub));
            }
            Out::Unsub { sid } => {
                self.streams.remove(&sid);
            }
            Out::Close(err) => {
                if let Some(text) = err {
                    proto::write_err(&mut self.buf, &text);
                }
                return Step::Close;
            }
        }
        Step::Go
    }

    /// A message of subscription `sid`, as `MSG` (or `HMSG`).
    fn message(&mut self, sid: &Bytes, m: &Message) {
        let last = match self.subs.count(sid) {
            Deliver::Yes => false,
            Deliver::Last => true,
            Deliver::Drop => {
                self.streams.remove(sid);
                return;
            }
        };
        let headers = (!m.headers.is_empty() && self.headers.load(Ordering::Relaxed))
            .then(|| proto::routed_header_block(&m.headers));
        proto::write_msg(
            &mut self.buf,
            &m.subject,
            sid,
            m.reply.as_deref(),
            headers.as_deref(),
            &m.payload,
        );
        if last {
            self.streams.remove(sid);
        }
    }
}
