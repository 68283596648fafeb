//! JetStream over the hub: the `$JS.API.*` requests (`api`), pull requests
//! (`pull`), push consumers (`push`) and `$JS.ACK.*` acks (`ack`), each
//! run against the backend and answered as nats-server 2.9 answers.

mod ack;
mod api;
mod pull;
mod push;

use std::sync::Arc;

pub(crate) use ack::AckNames;

use crate::ctx::{ConnCtx, PubItem};

/// Whether a publish to `subject` is for JetStream itself rather than a
/// message: an API request or an ack.
pub(crate) fn is_api(subject: &str) -> bool {
    subject.starts_with("$JS.API.") || subject.starts_with("$JS.ACK.")
}

/// Runs a JetStream request or ack (`is_api(item.subject)`).
pub(crate) async fn handle(ctx: &Arc<ConnCtx>, item: PubItem, names: &mut AckNames) {
    if item.subject.starts_with("$JS.ACK.") {
        let reply = item.reply.as_deref();
        ack::handle(ctx, item.subject, reply, &item.payload, names).await;
        return;
    }
    let Some(what) = item.subject.strip_prefix("$JS.API.") else {
        return;
    };
    if let Some(names) = what.strip_prefix("CONSUMER.MSG.NEXT.") {
        pull::handle(ctx, names, item.reply.map(String::from), &item.payload);
        return;
    }
    api::handle(ctx, what, item.reply.as_deref(), &item.payload).await;
}
