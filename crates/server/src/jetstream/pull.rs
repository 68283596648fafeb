//! Pull requests (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`): up to
//! `batch` deliveries to the request's reply subject, each with its
//! `$JS.ACK` reply, then the statuses nats-server 2.9 ends a request with
//! (404 No Messages, 408 Request Timeout, 409 ...) and idle heartbeats.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use durabus_core::jsapi::{nanos_to_duration, AckSubject, PullRequestJson};
use durabus_core::{Delivery, Error, HeaderMap};
use tokio::time::Instant;

use crate::ctx::{ConnCtx, Delivered};
use crate::proto;

/// How long one fetch waits when nothing else bounds it, so the request
/// notices a client that went away.
const ROUND: Duration = Duration::from_secs(1);

struct Request {
    batch: usize,
    expires: Option<Instant>,
    no_wait: bool,
    max_bytes: Option<usize>,
    heartbeat: Option<Duration>,
}

fn parse(body: &[u8]) -> Result<Request, String> {
    let r = PullRequestJson::parse(body).map_err(|e| e.to_string())?;
    let expires = (r.expires > 0).then(|| nanos_to_duration(r.expires));
    let heartbeat = (r.idle_heartbeat > 0).then(|| nanos_to_duration(r.idle_heartbeat));
    if let Some(hb) = heartbeat {
        if expires.is_none_or(|e| hb * 2 > e) {
            return Err("heartbeat value too large".into());
        }
    }
    Ok(Request {
        batch: usize::try_from(r.batch.max(1)).unwrap_or(usize::MAX),
        expires: expires.map(|e| Instant::now() + e),
        no_wait: r.no_wait,
        max_bytes: (r.max_bytes > 0).then(|| usize::try_from(r.max_bytes).unwrap_or(usize::MAX)),
        heartbeat,
    })
}

/// Starts serving a pull request for `names` (`<stream>.<consumer>`); a
/// request without a reply subject has nowhere to deliver and is ignored.
pub(crate) fn handle(ctx: &Arc<ConnCtx>, names: &str, reply: Option<String>, body: &[u8]) {
    let Some(reply) = reply else { return };
    let Some((stream, consumer)) = names.split_once('.') else {
        return;
    };
    let (stream, consumer) = (stream.to_owned(), consumer.to_owned());
    let request = parse(body);
    let ctx = ctx.clone();
    let closed = ctx.out.closed.clone();
    ctx.shared.tracker.clone().spawn(async move {
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                let d = format!("Bad Request - {e}");
                ctx.status(&reply, 400, &d, HeaderMap::new()).await;
                return;
            }
        };
        tokio::select! {
            () = closed.cancelled() => {}
            () = serve(&ctx, &stream, &consumer, &reply, request) => {}
        }
    });
}

async fn serve(ctx: &ConnCtx, stream: &str, consumer: &str, reply: &str, r: Request) {
    let backend = &ctx.shared.backend;
    let mut left = r.batch;
    let mut bytes_left = r.max_bytes;
    let mut delivered = 0usize;
    let mut last_sent = Instant::now();
    loop {
        let now = Instant::now();
        let mut wait = match r.expires {
            // A no-wait request takes only what is pending once it has
            // something (with an expiry it waits for the first).
            _ if r.no_wait && delivered > 0 => Duration::ZERO,
            Some(at) => at.saturating_duration_since(now),
            None if r.no_wait => Duration::ZERO,
            None => ROUND,
        };
        if let Some(hb) = r.heartbeat {
            wait = wait.min((last_sent + hb).saturating_duration_since(now));
        }
        let got = match backend.fetch(stream, consumer, left, wait.min(ROUND)).await {
            Ok(got) => got,
            Err(e) => {
                end_with_error(ctx, reply, &e, delivered).await;
                return;
            }
        };
        let round = got.len();
        let mut out = Vec::with_capacity(round);
        let mut too_big = false;
        for d in &got {
            let size = d.message.subject.len() + d.message.payload.len();
            if let Some(b) = bytes_left.as_mut() {
                if size > *b {
                    too_big = true;
                    break;
                }
                *b -= size;
            }
            out.push(delivered_form(stream, consumer, d, false));
        }
        delivered += out.len();
        left -= out.len();
        if !out.is_empty() {
            ctx.deliver_all(reply, out).await;
            last_sent = Instant::now();
        }
        if too_big {
            let h = pending(left, bytes_left.unwrap_or(0));
            ctx.status(reply, 409, "Message Size Exceeds MaxBytes", h)
                .await;
            return;
        }
        if left == 0 {
            return;
        }
        let now = Instant::now();
        let expired = r.expires.is_some_and(|at| now >= at);
        // A no-wait request ends once what was there is delivered (or, with
        // an expiry, once anything was).
        if r.no_wait && round == 0 && (delivered > 0 || r.expires.is_none() || expired) {
            if delivered == 0 {
                ctx.status(reply, 404, "No Messages", HeaderMap::new())
                    .await;
            } else {
                let h = pending(left, bytes_left.unwrap_or(0));
                ctx.status(reply, 408, "Request Timeout", h).await;
            }
            return;
        }
        if expired {
            let h = pending(left, bytes_left.unwrap_or(0));
            ctx.status(reply, 408, "Request Timeout", h).await;
            return;
        }
        // nats-server drops requests nobody waits for.
        if !ctx.has_interest(reply) {
            return;
        }
        if let Some(hb) = r.heartbeat {
            if now >= last_sent + hb {
                ctx.status(reply, 100, "Idle Heartbeat", HeaderMap::new())
                    .await;
                last_sent = now;
            }
        }
    }
}

fn pending(msgs: usize, bytes: usize) -> HeaderMap {
    HeaderMap::new()
        .with("Nats-Pending-Messages", msgs.to_string())
        .with("Nats-Pending-Bytes", bytes.to_string())
}

async fn end_with_error(ctx: &ConnCtx, reply: &str, e: &Error, delivered: usize) {
    match e {
        // No such consumer: nats-server 2.9 leaves the request unanswered
        // (its JetStream API takes the subject and drops it).
        Error::ConsumerNotFound { .. } | Error::StreamNotFound { .. } if delivered == 0 => {}
        Error::ConsumerNotFound { .. } | Error::StreamNotFound { .. } => {
            ctx.status(reply, 409, "Consumer Deleted", HeaderMap::new())
                .await;
        }
        Error::Closed => {}
        e => {
            let d = e.to_string();
            ctx.status(reply, 409, &d, HeaderMap::new()).await;
        }
    }
}

/// The ack subject of a delivery.
pub(crate) fn ack_subject(stream: &str, consumer: &str, d: &Delivery) -> String {
    let time_nanos = d
        .message
        .time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
    AckSubject {
        stream,
        consumer,
        delivered: d.ack.delivered,
        stream_seq: d.ack.stream_seq,
        consumer_seq: d.ack.consumer_seq,
        time_nanos,
        pending: d.pending,
    }
    .to_subject()
}

/// A delivery as it goes out; `headers_only` sends the headers and the
/// payload's size (`Nats-Msg-Size`) instead of the payload.
pub(crate) fn delivered_form(
    stream: &str,
    consumer: &str,
    d: &Delivery,
    headers_only: bool,
) -> Delivered {
    let m = &d.message;
    let (headers, payload) = if headers_only {
        let h = m
            .headers
            .clone()
            .with("Nats-Msg-Size", m.payload.len().to_string());
        (Some(proto::header_block(&h, None)), Bytes::new())
    } else {
        let h = (!m.headers.is_empty()).then(|| proto::header_block(&m.headers, None));
        (h, Bytes::clone(&m.payload))
    };
    Delivered {
        subject: m.subject.clone(),
        ack: ack_subject(stream, consumer, d),
        headers,
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_request_bodies_parse_as_nats_server_reads_them() {
        assert_eq!(parse(b"").unwrap().batch, 1);
        assert_eq!(parse(b" 7 ").unwrap().batch, 7);
        let r = parse(br#"{"batch":10,"expires":1000000000,"no_wait":true}"#).unwrap();
        assert!(r.no_wait && r.batch == 10 && r.expires.is_some());
        let e = parse(br#"{"batch":1,"expires":1000,"idle_heartbeat":1000}"#)
            .err()
            .unwrap();
        assert_eq!(e, "heartbeat value too large");
        assert!(parse(b"{bad").is_err());
        assert!(parse(b"-3").is_err());
    }
}
