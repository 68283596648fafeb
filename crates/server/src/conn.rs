//! One client connection: its reader (parse, then queue each operation)
//! and its publisher (the connection's operations, in order; publishes
//! batched into the store).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use durabus_core::jsapi::{PubAckJson, PubAckResponseJson};
use durabus_core::{subject, Error, HeaderMap, Message, Origin, PublishAck};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::sync::mpsc;

use crate::ctx::{ConnCtx, PubItem, Shared};
use crate::outbound::{self, Out, SubEntry, SubTable};
use crate::proto::{self, ClientOp, ConnectInfo, Parser};

/// A connection's publishes waiting for its publisher, in batches.
const PUBLISH_QUEUE: usize = 16;
/// Most publishes handed to the publisher at once.
const MAX_BATCH: usize = 1024;

/// What the publisher does, in the order the client asked.
pub(crate) enum Work {
    /// Publishes read together.
    Publish(Vec<PubItem>),
    /// Any other operation (but PONG): run once the publishes before it
    /// are done, so a PING answers a client's flush, and a SUB after a
    /// PUB does not see that PUB's message.
    Op(ClientOp),
}

/// Serves one client until it leaves, breaks the protocol, or the server
/// shuts down.
pub(crate) async fn serve<S>(shared: Arc<Shared>, stream: S, client_id: u64, peer: String)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut r, w) = tokio::io::split(stream);
    let subs = Arc::new(SubTable::default());
    let headers = Arc::new(AtomicBool::new(false));
    let out = outbound::spawn_writer(
        w,
        subs.clone(),
        headers.clone(),
        shared.options.max_pending,
        // Not the server's shutdown token: at shutdown the reader stops
        // first, the publishes it read are answered, then the writer ends.
        tokio_util::sync::CancellationToken::new(),
        &shared.tracker,
    );
    let mut info = BytesMut::new();
    proto::write_info(&mut info, &shared.info(client_id, &peer));
    out.frame(info.freeze());
    let ctx = Arc::new(ConnCtx {
        shared: shared.clone(),
        out: out.clone(),
        subs,
        headers,
        no_responders: AtomicBool::new(false),
        verbose: AtomicBool::new(false),
        pedantic: AtomicBool::new(false),
        echo: AtomicBool::new(true),
        origin: Origin::new(),
    });
    let (ptx, prx) = mpsc::channel(PUBLISH_QUEUE);
    let publisher = shared.tracker.spawn(publisher(ctx.clone(), prx));

    let mut parser = Parser::new(proto::Limits {
        max_control_line: shared.options.max_control_line,
        max_payload: shared.options.max_payload,
    });
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + shared.options.ping_interval,
        shared.options.ping_interval,
    );
    let mut pings_out = 0u32;
    // With a token set, nothing but a CONNECT that gives it comes first.
    let mut authorized = shared.options.auth_token.is_none();
    'conn: loop {
        tokio::select! {
            biased;
            () = out.closed.cancelled() => break,
            () = shared.shutdown.cancelled() => break,
            _ = ping.tick() => {
                if pings_out >= shared.options.max_pings_out {
                    out.close_with(Some("Stale Connection".into()));
                    break;
                }
                pings_out += 1;
                out.frame(proto::PING);
            }
            n = r.read_buf(&mut buf) => {
                if !matches!(n, Ok(n) if n > 0) {
                    break;
                }
                let mut batch = Vec::new();
                loop {
                    let op = match parser.parse(&mut buf) {
                        Ok(Some(op)) => op,
                        Ok(None) => break,
                        Err(e) => {
                            if !batch.is_empty() {
                                let _ = ptx.send(Work::Publish(std::mem::take(&mut batch))).await;
                            }
                            out.close_with(Some(e.err_text()));
                            break 'conn;
                        }
                    };
                    if !authorized {
                        match &op {
                            ClientOp::Connect(c) if shared.authorized(c) => authorized = true,
                            _ => {
                                out.close_with(Some("Authorization Violation".into()));
                                break 'conn;
                            }
                        }
                    }
                    let pub_ = match op {
                        ClientOp::Pub(p) => p,
                        ClientOp::Pong => {
                            pings_out = 0;
                            continue;
                        }
                        op => {
                            // Publishes before it go first.
                            if !batch.is_empty()
                                && ptx.send(Work::Publish(std::mem::take(&mut batch))).await.is_err()
                            {
                                break 'conn;
                            }
                            if ptx.send(Work::Op(op)).await.is_err() {
                                break 'conn;
                            }
                            continue;
                        }
                    };
                    let headers = match &pub_.headers {
                        None => HeaderMap::new(),
                        Some(block) => match proto::parse_header_block(block) {
                            Some(mut h) => {
                                h.remove(proto::ROUTED_STATUS);
                                h
                            }
                            None => {
                                out.close_with(Some(proto::ProtoError::Parse.err_text()));
                                break 'conn;
                            }
                        },
                    };
                    batch.push(PubItem {
                        subject: pub_.subject,
                        reply: pub_.reply,
                        headers,
                        payload: pub_.payload,
                    });
                    if batch.len() >= MAX_BATCH
                        && ptx.send(Work::Publish(std::mem::take(&mut batch))).await.is_err()
                    {
                        break 'conn;
                    }
                }
                if !batch.is_empty() && ptx.send(Work::Publish(batch)).await.is_err() {
                    break;
                }
            }
        }
    }
    // The publishes already read are stored and answered, then the
    // connection's other tasks end and the writer closes the socket.
    drop(ptx);
    let _ = publisher.await;
    ctx.out.closed.cancel();
}

impl ConnCtx {
    /// Runs an operation other than a publish; false ends the connection.
    async fn operation(&self, op: ClientOp) -> bool {
        // (answer +OK in verbose mode, keep the connection)
        let (ok, keep) = match op {
            ClientOp::Connect(c) => {
                let ok = self.connect(*c);
                (ok, ok)
            }
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => (self.subscribe(subject, queue, sid).await, true),
            ClientOp::Unsub { sid, max } => {
                self.unsubscribe(sid, max);
                (true, true)
            }
            ClientOp::Ping => {
                self.out.send(Out::Pong);
                (false, true)
            }
            ClientOp::Pong | ClientOp::Pub(_) => (false, true),
        };
        if ok && self.verbose.load(Ordering::Relaxed) {
            self.out.frame(proto::OK);
        }
        keep
    }

    fn connect(&self, c: ConnectInfo) -> bool {
        if c.no_responders && !c.headers {
            self.out
                .close_with(Some("no responders requires headers support".into()));
            return false;
        }
        self.verbose.store(c.verbose, Ordering::Relaxed);
        self.pedantic.store(c.pedantic, Ordering::Relaxed);
        self.headers.store(c.headers, Ordering::Relaxed);
        self.no_responders.store(c.no_responders, Ordering::Relaxed);
        self.echo.store(c.echo.unwrap_or(true), Ordering::Relaxed);
        true
    }

    async fn subscribe(&self, filter: String, queue: Option<String>, sid: Bytes) -> bool {
        let queue_ok = queue.as_deref().is_none_or(|q| {
            !q.is_empty()
                && !q
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        });
        if subject::validate_filter(&filter).is_err() || !queue_ok {
            let mut b = BytesMut::new();
            proto::write_err(&mut b, "Invalid Subject");
            self.out.frame(b.freeze());
            return false;
        }
        if self.subs.lock().contains_key(&sid) {
            // nats-server ignores a sid already in use.
            return true;
        }
        let backend = &self.shared.backend;
        let sub = match self.no_echo() {
            None => backend.subscribe(&filter, queue.as_deref()).await,
            Some(origin) => {
                backend
                    .subscribe_from(origin, &filter, queue.as_deref())
                    .await
            }
        };
        match sub {
            Ok(sub) => {
                self.subs.lock().insert(
                    sid.clone(),
                    SubEntry {
                        filter,
                        max: None,
                        delivered: 0,
                    },
                );
                self.out.send(Out::Sub { sid, sub });
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the store refused a subscription");
                let mut b = BytesMut::new();
                proto::write_err(&mut b, "Invalid Subject");
                self.out.frame(b.freeze());
                false
            }
        }
    }

    fn unsubscribe(&self, sid: Bytes, max: Option<u64>) {
        let mut t = self.subs.lock();
        if let (Some(max), Some(e)) = (max, t.get_mut(&sid)) {
            if e.delivered < max {
                e.max = Some(max);
                return;
            }
        }
        if t.remove(&sid).is_some() {
            drop(t);
            self.out.send(Out::Unsub { sid });
        }
    }
}

/// A connection's publishes, in the order it sent them: runs of ordinary
/// publishes go to the store as one batch (one group commit); `$JS.API`
/// requests and `$JS.ACK` acks are run in place.
async fn publisher(ctx: Arc<ConnCtx>, mut rx: mpsc::Receiver<Work>) {
    let mut names = crate::jetstream::AckNames::default();
    while let Some(work) = rx.recv().await {
        let batch = match work {
            Work::Publish(batch) => batch,
            Work::Op(op) => {
                if !ctx.operation(op).await {
                    ctx.out.closed.cancel();
                    break;
                }
                continue;
            }
        };
        if ctx.verbose.load(Ordering::Relaxed) {
            for _ in &batch {
                ctx.out.frame(proto::OK);
            }
        }
        let mut run = Vec::with_capacity(batch.len());
        for item in batch {
            if item.subject.starts_with("$JS.") && crate::jetstream::is_api(&item.subject) {
                publish_run(&ctx, std::mem::take(&mut run)).await;
                crate::jetstream::handle(&ctx, item, &mut names).await;
            } else {
                run.push(item);
            }
        }
        publish_run(&ctx, run).await;
        // Let the connections this batch was routed to write it before
        // the next batch is routed: a publisher that outruns its
        // subscribers' writers would make their queues overflow.
        tokio::task::yield_now().await;
    }
}

async fn publish_run(ctx: &ConnCtx, run: Vec<PubItem>) {
    if run.is_empty() {
        return;
    }
    let mut answers = Vec::with_capacity(run.len());
    let messages: Vec<Message> = run
        .into_iter()
        .map(|p| {
            answers.push((p.subject.clone(), p.reply.clone()));
            Message {
                subject: p.subject.to_string(),
                reply: p.reply.map(|r| r.to_string()),
                headers: p.headers,
                payload: p.payload,
            }
        })
        .collect();
    let backend = &ctx.shared.backend;
    let results = match ctx.no_echo() {
        Some(origin) => backend.publish_batch_from(origin, messages).await,
        None if messages.len() == 1 => {
            let mut messages = messages;
            match messages.pop() {
                Some(m) => Ok(vec![backend.publish(m).await]),
                None => return,
            }
        }
        None => backend.publish_batch(messages).await,
    };
    let results = match results {
        Ok(r) => r,
        // The whole batch failed (the store closed): each publish gets it.
        Err(e) => {
            let err = durabus_core::ApiError::from_error(&e);
            answers.iter().map(|_| Err(err.generic())).collect()
        }
    };
    for (result, (subj, reply)) in results.into_iter().zip(answers) {
        match (result, reply.as_deref()) {
            (Ok(Some(ack)), Some(reply)) => ctx.answer(reply, pub_ack_json(&ack)).await,
            (Ok(None), Some(reply)) => {
                if ctx.wants_no_responders() && !backend.has_subscribers(&subj) {
                    ctx.status(reply, 503, "", HeaderMap::new()).await;
                }
            }
            (Ok(_), None) => {}
            (Err(Error::InvalidSubject { .. }), _) => {
                if ctx.pedantic.load(Ordering::Relaxed) {
                    let mut b = BytesMut::new();
                    proto::write_err(&mut b, "Invalid Publish Subject");
                    ctx.out.frame(b.freeze());
                }
            }
            (Err(e), Some(reply)) => {
                let stream = match &e {
                    Error::StreamFull { stream, .. } => stream.clone(),
                    _ => String::new(),
                };
                let answer =
                    PubAckResponseJson::error(stream, durabus_core::ApiError::from_error(&e));
                ctx.answer(reply, serde_json::to_vec(&answer).unwrap_or_default())
                    .await;
            }
            (Err(e), None) => {
                tracing::debug!(subject = &*subj, error = %e, "a publish without reply failed");
            }
        }
    }
}

/// A publish ack as nats-server writes it.
fn pub_ack_json(ack: &PublishAck) -> Vec<u8> {
    serde_json::to_vec(&PubAckJson::from(ack)).unwrap_or_default()
}
