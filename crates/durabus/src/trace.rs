//! Observability: W3C Trace Context propagation, correlation ids and
//! service names carried in message headers, and `tracing` spans.
//!
//! # Headers
//!
//! | header | value |
//! |---|---|
//! | [`TRACEPARENT`] (`traceparent`) | `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>` ([W3C Trace Context](https://www.w3.org/TR/trace-context/)) |
//! | [`TRACESTATE`] (`tracestate`) | vendor state, carried along unchanged |
//! | [`CORRELATION_ID`] (`Correlation-Id`) | an application's id for one piece of work |
//! | [`SERVICE`] (`Durabus-Service`) | the service that published the message |
//!
//! # The injection rule
//!
//! Every publish through [`Bus`](crate::Bus) (`publish`, `publish_message`,
//! `publish_batch`, `request`, and so the consumer runner, dead letters,
//! redrives and rooms) stamps each message, unless
//! [`Propagation::Off`] was chosen:
//!
//! 1. A message that already has a valid `traceparent` keeps it (and its
//!    `tracestate`) unchanged.
//! 2. Otherwise, if the current [`Context`] holds
//!    a trace (inside [`context::scope`], or inside a
//!    consumer handler, whose context is the received message's), the
//!    message continues that trace: same trace id and flags, a new parent
//!    id, the context's `tracestate`.
//! 3. Otherwise, with the feature `opentelemetry`, if the current
//!    OpenTelemetry span is valid, the message continues it: its trace id,
//!    flags and `tracestate`, and its span id as the parent id.
//! 4. Otherwise, with [`Propagation::Always`], a new trace starts: random
//!    trace and parent ids, flags `01` (sampled). With the default
//!    [`Propagation::Continue`] the message gets no `traceparent`: a plain
//!    publish outside any trace stays as it was given, and costs nothing.
//!
//! A malformed `traceparent` (or a `tracestate` without one) is replaced
//! as in 2 to 4 when there is a trace; bytes from the wire never cause a
//! panic.
//! One `publish_batch` call is one producer span: every message it stamps
//! gets the same `traceparent`, so the batch costs one id and one
//! formatting, and each message one header clone.
//!
//! `Correlation-Id` is added from the context when the message has none;
//! `Durabus-Service` is added when the message has none, from the context
//! or else from the bus ([`ConnectOptions::service_name`](crate::ConnectOptions::service_name)).
//!
//! # Spans
//!
//! `durabus.publish` (subject; stream and seq once acked; trace id) and
//! `durabus.publish_batch` (count; trace id) at `DEBUG`, as they sit on the
//! hot path; `durabus.request` (subject, trace id) and `durabus.consume`
//! (stream, consumer, subject, seq, delivery count, trace id; the handler
//! runs inside it) at `INFO`.

use std::sync::Arc;

use durabus_core::{Delivery, HeaderMap, Message, StoredMessage};

use crate::context::{self, Context};
pub use crate::w3c::{
    InvalidTraceparent, SpanId, TraceContext, TraceId, CORRELATION_ID, SERVICE, TRACEPARENT,
    TRACESTATE,
};

/// Whether durabus stamps trace, correlation and service headers on
/// publish. Receiving always reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// Continue the trace in context (steps 1 to 3 of the module docs): a
    /// message published outside any trace gets no `traceparent`, so plain
    /// publishes cost nothing. Correlation id and service name are added
    /// when set. The default.
    #[default]
    Continue,
    /// As `Continue`, and start a new trace (step 4) for a message
    /// published outside any, so every message carries a `traceparent`.
    /// It costs about 60 bytes a message (a third more for 128-byte
    /// messages) and as much throughput.
    Always,
    /// Publish messages as given: no header is added.
    Off,
}

/// The current OpenTelemetry span as the parent of what is published
/// (feature `opentelemetry`).
#[cfg(feature = "opentelemetry")]
fn otel_current() -> Option<TraceContext> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let t = TraceContext::new(
        TraceId::from_bytes(sc.trace_id().to_bytes())?,
        SpanId::from_bytes(sc.span_id().to_bytes())?,
        sc.trace_flags().to_u8(),
    );
    Some(t.with_tracestate(Some(&sc.trace_state().header())))
}

#[cfg(not(feature = "opentelemetry"))]
fn otel_current() -> Option<TraceContext> {
    None
}

/// What a received message carries: its trace context, correlation id and
/// sender's service. Implemented for [`Message`] (subscriptions, replies),
/// [`StoredMessage`] (replays, direct gets), [`Delivery`] (consumers) and
/// [`HeaderMap`].
///
/// ```
/// use durabus::MessageContext as _;
/// let m = durabus::Message::new("a", "x").with_header("Correlation-Id", "order-7");
/// assert_eq!(m.correlation_id(), Some("order-7"));
/// assert!(m.trace_context().is_none());
/// ```
pub trait MessageContext {
    /// The headers read.
    fn context_headers(&self) -> &HeaderMap;

    /// The W3C trace context, when the message has a valid one.
    fn trace_context(&self) -> Option<TraceContext> {
        TraceContext::from_headers(self.context_headers())
    }

    /// The [`CORRELATION_ID`] header.
    fn correlation_id(&self) -> Option<&str> {
        self.context_headers().get(CORRELATION_ID)
    }

    /// The [`SERVICE`] header: who published it.
    fn service(&self) -> Option<&str> {
        self.context_headers().get(SERVICE)
    }

    /// The context to handle this message in (its trace and correlation id,
    /// not its sender's service), for [`context::scope`]: what is published
    /// inside continues the trace and keeps the correlation id.
    fn context(&self) -> Context {
        Context::from_headers(self.context_headers())
    }
}

impl MessageContext for HeaderMap {
    fn context_headers(&self) -> &HeaderMap {
        self
    }
}

impl MessageContext for Message {
    fn context_headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl MessageContext for StoredMessage {
    fn context_headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl MessageContext for Delivery {
    fn context_headers(&self) -> &HeaderMap {
        &self.message.headers
    }
}

/// The bus's stamping settings: a field of every [`Bus`](crate::Bus).
#[derive(Debug, Clone, Default)]
pub(crate) struct Stamp {
    pub(crate) propagation: Propagation,
    pub(crate) service: Option<Arc<str>>,
}

impl Stamp {
    /// Stamps `messages` per the module docs' rule; the trace id of the
    /// first message, for the caller's span.
    pub(crate) fn apply(&self, messages: &mut [Message]) -> Option<TraceId> {
        if self.propagation == Propagation::Off {
            return None;
        }
        context::with_current(|ctx| {
            let correlation = ctx.and_then(Context::correlation_id);
            let service = ctx.and_then(Context::service).or(self.service.as_deref());
            // The call's own traceparent: one per call (a batch is one
            // producer span), `None` when there is no trace to continue and
            // none is to be started.
            let mut trace = match ctx.and_then(Context::trace) {
                Some(t) => Some(t.child()),
                None => otel_current().or_else(|| {
                    (self.propagation == Propagation::Always).then(TraceContext::generate)
                }),
            }
            .map(|t| (t.trace_id, t.traceparent(), t.state));
            if trace.is_none() && correlation.is_none() && service.is_none() {
                // Nothing to add: plain publishes stay as they are, at no cost.
                return None;
            }
            let mut first = None;
            let last = messages.len().saturating_sub(1);
            for (i, m) in messages.iter_mut().enumerate() {
                let h = &mut m.headers;
                if h.is_empty() {
                    // The common case, built at its exact size: one
                    // allocation for the map (the hot path of batches).
                    let (tp, state) = match trace.as_mut() {
                        Some((id, tp, state)) => {
                            first.get_or_insert(*id);
                            // The last message takes the string itself.
                            let tp = if i == last {
                                std::mem::take(tp)
                            } else {
                                tp.clone()
                            };
                            (Some(tp), state.as_ref())
                        }
                        None => (None, None),
                    };
                    *h = tp
                        .map(|tp| (TRACEPARENT, tp))
                        .into_iter()
                        .chain(state.map(|s| (TRACESTATE, s.to_string())))
                        .chain(correlation.map(|c| (CORRELATION_ID, c.to_owned())))
                        .chain(service.map(|s| (SERVICE, s.to_owned())))
                        .collect();
                    continue;
                }
                match h.get(TRACEPARENT).map(TraceContext::parse) {
                    Some(Ok(t)) => {
                        first.get_or_insert(t.trace_id);
                    }
                    // Missing or malformed: ours, if there is one.
                    _ => {
                        if let Some((id, tp, state)) = &trace {
                            h.remove(TRACEPARENT);
                            h.remove(TRACESTATE);
                            h.append(TRACEPARENT, tp.clone());
                            if let Some(s) = state {
                                h.append(TRACESTATE, s.to_string());
                            }
                            first.get_or_insert(*id);
                        }
                    }
                }
                if let Some(c) = correlation {
                    if h.get(CORRELATION_ID).is_none() {
                        h.append(CORRELATION_ID, c);
                    }
                }
                if let Some(s) = service {
                    if h.get(SERVICE).is_none() {
                        h.append(SERVICE, s);
                    }
                }
            }
            first
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    #[test]
    fn a_batch_shares_one_traceparent_and_keeps_its_own() {
        let mut batch = vec![
            Message::new("a", "1"),
            Message::new("a", "2").with_header(TRACEPARENT, TP),
            Message::new("a", "3").with_header(TRACEPARENT, "junk"),
        ];
        let stamp = Stamp {
            propagation: Propagation::Always,
            service: Some("svc".into()),
        };
        stamp.apply(&mut batch);
        assert_eq!(batch[1].headers.get(TRACEPARENT), Some(TP));
        let ours = batch[0].headers.get(TRACEPARENT).unwrap();
        assert_eq!(batch[2].headers.get(TRACEPARENT), Some(ours));
        assert_eq!(batch[2].headers.get_all(TRACEPARENT).count(), 1);
        assert!(batch.iter().all(|m| m.headers.get(SERVICE) == Some("svc")));

        let mut plain = vec![Message::new("a", "1")];
        Stamp {
            propagation: Propagation::Off,
            service: Some("svc".into()),
        }
        .apply(&mut plain);
        assert!(plain[0].headers.is_empty());
    }

    #[test]
    fn continue_adds_nothing_outside_a_trace_and_continues_inside_one() {
        let stamp = Stamp::default();
        assert_eq!(stamp.propagation, Propagation::Continue);
        let mut plain = vec![
            Message::new("a", "1"),
            Message::new("a", "2").with_header("X", "y"),
        ];
        assert_eq!(stamp.apply(&mut plain), None);
        assert!(plain[0].headers.is_empty());
        assert_eq!(plain[1].headers.len(), 1);

        let parent = TraceContext::parse(TP).unwrap();
        let mut inside = vec![Message::new("a", "1")];
        let id = context::sync_scope(Context::new().with_trace(parent.clone()), || {
            stamp.apply(&mut inside)
        });
        assert_eq!(id, Some(parent.trace_id()));
        let child = inside[0].trace_context().unwrap();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.parent_id(), parent.parent_id());

        let named = Stamp {
            propagation: Propagation::Continue,
            service: Some("svc".into()),
        };
        let mut m = vec![Message::new("a", "1")];
        named.apply(&mut m);
        assert_eq!(m[0].headers.get(SERVICE), Some("svc"));
        assert_eq!(m[0].headers.get(TRACEPARENT), None);
    }
}
