//! The `$JS.API.*` requests: streams, consumers and messages, answered as
//! nats-server 2.9 answers them.

use std::sync::Arc;

use crate::conn::ConnCtx;

/// Runs API request `what` (the subject after `$JS.API.`) and answers to
/// `reply`.
pub(crate) async fn handle(ctx: &Arc<ConnCtx>, what: &str, reply: Option<&str>, body: &[u8]) {
    let _ = (ctx, what, reply, body);
}
