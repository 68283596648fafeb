//! `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<nanos>.<pending>`:
//! a client settling a delivery (`+ACK`, `-NAK`, `+TERM`, `+WPI`, `+NXT`),
//! and the empty reply of a double ack.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use durabus_core::{AckKind, AckRef, ByteString, Error, HeaderMap};
use serde::Deserialize;

use crate::conn::ConnCtx;

/// What an ack subject names (after `$JS.ACK.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckSubject<'a> {
    pub(crate) stream: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) delivered: u64,
    pub(crate) stream_seq: u64,
    pub(crate) consumer_seq: u64,
}

/// Parses the tokens after `$JS.ACK.`: the v1 form (7 tokens).
pub(crate) fn parse(rest: &str) -> Option<AckSubject<'_>> {
    let mut t = rest.split('.');
    let stream = t.next()?;
    let consumer = t.next()?;
    let mut num = || t.next()?.parse::<u64>().ok();
    let ack = AckSubject {
        stream,
        consumer,
        delivered: num()?,
        stream_seq: num()?,
        consumer_seq: num()?,
    };
    // The time and the pending count, then nothing.
    num()?;
    num()?;
    if t.next().is_some() || stream.is_empty() || consumer.is_empty() {
        return None;
    }
    Some(ack)
}

#[derive(Deserialize)]
struct NakDelay {
    #[serde(default)]
    delay: u64,
}

/// What an ack's body asks.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Settle(AckKind),
    /// `+NXT`: ack, then a pull request with this body.
    Next(Bytes),
}

fn kind(body: &[u8]) -> Option<Kind> {
    let trimmed = body.trim_ascii();
    let (word, rest) = match trimmed.iter().position(|b| b.is_ascii_whitespace()) {
        Some(i) => (&trimmed[..i], trimmed[i..].trim_ascii()),
        None => (trimmed, &b""[..]),
    };
    Some(match word {
        b"" | b"+ACK" => Kind::Settle(AckKind::Ack),
        b"-NAK" => {
            let delay = if rest.is_empty() {
                None
            } else {
                let d: NakDelay = serde_json::from_slice(rest).ok()?;
                (d.delay > 0).then(|| Duration::from_nanos(d.delay))
            };
            Kind::Settle(AckKind::Nak(delay))
        }
        b"+TERM" => Kind::Settle(AckKind::Term),
        b"+WPI" => Kind::Settle(AckKind::InProgress),
        b"+NXT" => Kind::Next(Bytes::copy_from_slice(rest)),
        _ => return None,
    })
}

/// Settles the delivery `rest` names; with a reply, answers once the
/// backend has applied it (an empty message), or 503 when there is no
/// such consumer (nobody listens on its ack subjects).
pub(crate) async fn handle(ctx: &Arc<ConnCtx>, rest: &str, reply: Option<&str>, body: &[u8]) {
    let (Some(ack), Some(kind)) = (parse(rest), kind(body)) else {
        tracing::debug!(subject = rest, "an unreadable ack was ignored");
        return;
    };
    let r = AckRef {
        stream: Arc::from(ack.stream),
        consumer: Arc::from(ack.consumer),
        stream_seq: ack.stream_seq,
        consumer_seq: ack.consumer_seq,
        delivered: ack.delivered,
        token: Some(ByteString::from(format!("$JS.ACK.{rest}"))),
    };
    let backend = &ctx.shared.backend;
    let (settle, next) = match kind {
        Kind::Settle(k) => (k, None),
        Kind::Next(body) => (AckKind::Ack, Some(body)),
    };
    let result = if reply.is_some() {
        backend.ack_confirmed(&r, settle).await
    } else {
        backend.ack(&r, settle).await
    };
    match (result, reply) {
        (Ok(()), Some(reply)) => {
            if let Some(body) = next {
                let names = format!("{}.{}", ack.stream, ack.consumer);
                super::pull::handle(ctx, &names, Some(reply.to_owned()), &body);
            } else {
                ctx.answer(reply, Vec::new()).await;
            }
        }
        (Err(Error::ConsumerNotFound { .. } | Error::StreamNotFound { .. }), Some(reply)) => {
            if ctx.wants_no_responders() {
                ctx.status(reply, 503, "", HeaderMap::new()).await;
            }
        }
        (Err(e), _) => tracing::debug!(error = %e, "an ack failed"),
        (Ok(()), None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_and_bodies_parse() {
        let a = parse("S.C.2.7.3.1700000000000000000.0").unwrap();
        assert_eq!(
            (a.stream, a.consumer, a.delivered, a.stream_seq),
            ("S", "C", 2, 7)
        );
        assert!(parse("S.C.2.7.3.1").is_none());
        assert!(parse("S.C.x.7.3.1.0").is_none());
        assert_eq!(kind(b""), Some(Kind::Settle(AckKind::Ack)));
        assert_eq!(
            kind(b"-NAK {\"delay\": 1000}"),
            Some(Kind::Settle(AckKind::Nak(Some(Duration::from_nanos(1000)))))
        );
        assert_eq!(kind(b"+TERM reason"), Some(Kind::Settle(AckKind::Term)));
        assert_eq!(kind(b"+NXT 5"), Some(Kind::Next(Bytes::from_static(b"5"))));
        assert_eq!(kind(b"bogus"), None);
    }
}
