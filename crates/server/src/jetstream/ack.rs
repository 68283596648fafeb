//! `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<nanos>.<pending>`:
//! a client settling a delivery (`+ACK`, `-NAK`, `+TERM`, `+WPI`, `+NXT`),
//! and the empty reply of a double ack. The subject and bodies are read
//! with `durabus_core::jsapi`, which the NATS backend writes them with.

use std::sync::Arc;

use durabus_core::jsapi::{parse_ack_payload, AckRequest, AckSubject};
use durabus_core::{AckKind, AckRef, ByteString, Error, HeaderMap};

use crate::ctx::ConnCtx;

/// The stream and consumer names of a connection's last ack: a consumer's
/// acks come in runs, and each would otherwise allocate both names again.
#[derive(Default)]
pub(crate) struct AckNames(Option<(Arc<str>, Arc<str>)>);

impl AckNames {
    fn get(&mut self, stream: &str, consumer: &str) -> (Arc<str>, Arc<str>) {
        match &self.0 {
            Some((s, c)) if **s == *stream && **c == *consumer => (s.clone(), c.clone()),
            _ => {
                let names = (Arc::<str>::from(stream), Arc::<str>::from(consumer));
                self.0 = Some(names.clone());
                names
            }
        }
    }
}

/// Settles the delivery `subject` names; with a reply, answers once the
/// backend has applied it (an empty message), or 503 when there is no
/// such consumer (nobody listens on its ack subjects). Unreadable acks
/// are dropped, as nats-server drops them.
pub(crate) async fn handle(
    ctx: &Arc<ConnCtx>,
    subject: ByteString,
    reply: Option<&str>,
    body: &[u8],
    names: &mut AckNames,
) {
    let (Some(ack), Some(request)) = (AckSubject::parse(&subject), parse_ack_payload(body)) else {
        tracing::debug!(subject = &*subject, "an unreadable ack was ignored");
        return;
    };
    let (stream, consumer) = names.get(ack.stream, ack.consumer);
    let r = AckRef {
        stream,
        consumer,
        stream_seq: ack.stream_seq,
        consumer_seq: ack.consumer_seq,
        delivered: ack.delivered,
        token: Some(subject),
    };
    let backend = &ctx.shared.backend;
    let (settle, next) = match request {
        AckRequest::Settle(k) => (k, None),
        AckRequest::Next(body) => (AckKind::Ack, Some(body)),
    };
    let result = if reply.is_some() {
        backend.ack_confirmed(&r, settle).await
    } else {
        backend.ack(&r, settle).await
    };
    match (result, reply) {
        (Ok(()), Some(reply)) => match next {
            Some(body) => {
                let names = format!("{}.{}", r.stream, r.consumer);
                super::pull::handle(ctx, &names, Some(reply.to_owned()), body);
            }
            None => ctx.answer(reply, Vec::new()).await,
        },
        (Err(Error::ConsumerNotFound { .. } | Error::StreamNotFound { .. }), Some(reply)) => {
            if ctx.wants_no_responders() {
                ctx.status(reply, 503, "", HeaderMap::new()).await;
            }
        }
        (Err(e), _) => tracing::debug!(error = %e, "an ack failed"),
        (Ok(()), None) => {}
    }
}
