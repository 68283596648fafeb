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

use std::fmt;
use std::sync::Arc;

use durabus_core::{Delivery, HeaderMap, Message, StoredMessage};

use crate::context::{self, Context};

/// Header with the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// Header with the W3C `tracestate`, carried along unchanged.
pub const TRACESTATE: &str = "tracestate";
/// Header with the correlation id.
pub const CORRELATION_ID: &str = "Correlation-Id";
/// Header with the name of the service that published the message.
pub const SERVICE: &str = "Durabus-Service";

/// The length of a version `00` `traceparent`.
const TRACEPARENT_LEN: usize = 55;

/// The `sampled` trace flag.
const SAMPLED: u8 = 0x01;

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

/// A 16-byte W3C trace id (never all zero).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(u128);

impl TraceId {
    /// The id from its 16 bytes (big-endian, as printed); `None` for all zero.
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        let v = u128::from_be_bytes(bytes);
        (v != 0).then_some(TraceId(v))
    }

    /// Its 16 bytes (big-endian, as printed).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    fn random() -> Self {
        loop {
            let v = (u128::from(random_u64()) << 64) | u128::from(random_u64());
            if v != 0 {
                return TraceId(v);
            }
        }
    }
}

impl fmt::Display for TraceId {
    /// 32 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// An 8-byte W3C span (parent) id (never all zero).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(u64);

impl SpanId {
    /// The id from its 8 bytes (big-endian, as printed); `None` for all zero.
    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        let v = u64::from_be_bytes(bytes);
        (v != 0).then_some(SpanId(v))
    }

    /// Its 8 bytes (big-endian, as printed).
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    fn random() -> Self {
        loop {
            let v = random_u64();
            if v != 0 {
                return SpanId(v);
            }
        }
    }
}

impl fmt::Display for SpanId {
    /// 16 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// A random number from a per-thread small fast generator seeded by the
/// OS: ids need to be unique and unguessable enough for tracing, not
/// secret, and they are made on the publish hot path.
fn random_u64() -> u64 {
    use rand::{Rng as _, SeedableRng as _};
    thread_local! {
        static RNG: std::cell::RefCell<rand::rngs::SmallRng> =
            std::cell::RefCell::new(rand::rngs::SmallRng::from_rng(&mut rand::rng()));
    }
    RNG.with(|r| r.borrow_mut().random())
}

/// Why a `traceparent` value was refused by [`TraceContext::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent: {reason}")]
pub struct InvalidTraceparent {
    reason: &'static str,
}

impl InvalidTraceparent {
    /// What is wrong with it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// A W3C trace context: trace id, parent id, flags and `tracestate`.
///
/// ```
/// use durabus::trace::TraceContext;
/// let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let ctx = TraceContext::parse(tp)?;
/// assert_eq!(ctx.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(ctx.is_sampled());
/// assert_eq!(ctx.traceparent(), tp);
/// let child = ctx.child();
/// assert_eq!(child.trace_id(), ctx.trace_id());
/// assert_ne!(child.parent_id(), ctx.parent_id());
/// # Ok::<(), durabus::trace::InvalidTraceparent>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    parent_id: SpanId,
    flags: u8,
    state: Option<Arc<str>>,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("traceparent", &self.traceparent())
            .field("tracestate", &self.state)
            .finish()
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

impl TraceContext {
    /// A context from its parts. Only the `sampled` bit of `flags` is kept
    /// (the other bits are undefined in version `00` and sent as zero).
    pub fn new(trace_id: TraceId, parent_id: SpanId, flags: u8) -> Self {
        TraceContext {
            trace_id,
            parent_id,
            flags: flags & SAMPLED,
            state: None,
        }
    }

    /// A new trace: random trace and parent ids, sampled.
    pub fn generate() -> Self {
        Self::new(TraceId::random(), SpanId::random(), SAMPLED)
    }

    /// The same trace, flags and `tracestate` under a new random parent id:
    /// the context a new span continues with.
    #[must_use]
    pub fn child(&self) -> Self {
        TraceContext {
            parent_id: SpanId::random(),
            ..self.clone()
        }
    }

    /// Sets the `tracestate` carried along (`None` or empty: none).
    #[must_use]
    pub fn with_tracestate(mut self, state: Option<&str>) -> Self {
        self.state = state.filter(|s| !s.is_empty()).map(Arc::from);
        self
    }

    /// Parses a `traceparent` value as the W3C rules say: version `00` is
    /// exactly 55 characters; a higher version (not `ff`) is read for its
    /// version-00 fields when the 56th character is absent or a `-`. Hex is
    /// lowercase; all-zero ids are invalid. Only the `sampled` flag is kept.
    pub fn parse(traceparent: &str) -> Result<Self, InvalidTraceparent> {
        let bad = |reason| Err(InvalidTraceparent { reason });
        let b = traceparent.as_bytes();
        if b.len() < TRACEPARENT_LEN {
            return bad("shorter than 55 characters");
        }
        let Some(version) = hex_u64(&b[0..2]) else {
            return bad("version is not 2 lowercase hex digits");
        };
        if version == 0xff {
            return bad("version ff is forbidden");
        }
        if version == 0 && b.len() != TRACEPARENT_LEN {
            return bad("version 00 must be exactly 55 characters");
        }
        if b.len() > TRACEPARENT_LEN && b[TRACEPARENT_LEN] != b'-' {
            return bad("a higher version's fields must be followed by '-'");
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return bad("fields must be separated by '-'");
        }
        let (Some(hi), Some(lo)) = (hex_u64(&b[3..19]), hex_u64(&b[19..35])) else {
            return bad("trace id is not 32 lowercase hex digits");
        };
        let Some(parent) = hex_u64(&b[36..52]) else {
            return bad("parent id is not 16 lowercase hex digits");
        };
        let Some(flags) = hex_u64(&b[53..55]) else {
            return bad("flags are not 2 lowercase hex digits");
        };
        let trace = (u128::from(hi) << 64) | u128::from(lo);
        if trace == 0 {
            return bad("trace id is all zero");
        }
        if parent == 0 {
            return bad("parent id is all zero");
        }
        Ok(Self::new(
            TraceId(trace),
            SpanId(parent),
            u8::try_from(flags).unwrap_or(0),
        ))
    }

    /// The context in `headers` (`traceparent`, and every `tracestate`
    /// joined with `,`); `None` when absent or invalid.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let ctx = Self::parse(headers.get(TRACEPARENT)?).ok()?;
        let mut states = headers.get_all(TRACESTATE);
        let state = match (states.next(), states.next()) {
            (None, _) => None,
            (Some(one), None) => Some(Arc::from(one)),
            (Some(a), Some(b)) => {
                let mut all = format!("{a},{b}");
                for s in states {
                    all.push(',');
                    all.push_str(s);
                }
                Some(Arc::from(all))
            }
        };
        Some(TraceContext { state, ..ctx })
    }

    /// Sets `traceparent` (and `tracestate`, if any) in `headers`,
    /// replacing earlier values.
    pub fn inject(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.traceparent());
        headers.remove(TRACESTATE);
        if let Some(s) = &self.state {
            headers.append(TRACESTATE, s.to_string());
        }
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The parent id: the id of the span that sent it.
    pub fn parent_id(&self) -> SpanId {
        self.parent_id
    }

    /// The trace flags (only the `sampled` bit, `0x01`, is defined).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the `sampled` flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The `tracestate`, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// The version-00 `traceparent` value (55 characters).
    pub fn traceparent(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; TRACEPARENT_LEN];
        out[..3].copy_from_slice(b"00-");
        let trace = self.trace_id.0;
        for (i, slot) in out[3..35].iter_mut().enumerate() {
            *slot = HEX[((trace >> (124 - 4 * i)) & 0xf) as usize];
        }
        out[35] = b'-';
        let parent = self.parent_id.0;
        for (i, slot) in out[36..52].iter_mut().enumerate() {
            *slot = HEX[((parent >> (60 - 4 * i)) & 0xf) as usize];
        }
        out[52] = b'-';
        out[53] = HEX[usize::from(self.flags >> 4)];
        out[54] = HEX[usize::from(self.flags & 0xf)];
        // Only ASCII was written: no replacement happens.
        String::from_utf8_lossy(&out).into_owned()
    }
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

/// Lowercase hex (at most 16 digits) to a number; `None` for anything else.
fn hex_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u64::from(v))
    })
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
    fn version_00_round_trips_exactly() {
        let ctx = TraceContext::parse(TP).unwrap();
        assert_eq!(ctx.traceparent(), TP);
        assert_eq!(ctx.parent_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(ctx.flags(), 1);
        let unsampled = TP.replace("-01", "-00");
        assert!(!TraceContext::parse(&unsampled).unwrap().is_sampled());
    }

    #[test]
    fn malformed_values_are_refused_never_a_panic() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let upper = TP.to_uppercase();
        let long_00 = format!("{TP}-x");
        let ff = TP.replacen("00", "ff", 1);
        let bad_sep = TP.replace('-', "_");
        for bad in [
            "",
            "00",
            zero_trace,
            zero_parent,
            &upper,
            &long_00,
            &ff,
            &bad_sep,
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{e9}",
        ] {
            assert!(TraceContext::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_future_version_is_read_for_its_version_00_fields() {
        let v = TP.replacen("00", "cc", 1);
        assert_eq!(TraceContext::parse(&v).unwrap().traceparent(), TP);
        let more = format!("{v}-what-the-future-holds");
        assert_eq!(TraceContext::parse(&more).unwrap().traceparent(), TP);
        assert!(TraceContext::parse(&format!("{v}x")).is_err());
    }

    #[test]
    fn unknown_flags_are_not_propagated() {
        let ctx = TraceContext::parse(&TP.replace("-01", "-ff")).unwrap();
        assert_eq!(ctx.flags(), 1);
        assert!(ctx.traceparent().ends_with("-01"));
    }

    #[test]
    fn tracestate_headers_are_joined_and_reinjected() {
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, TP);
        h.append(TRACESTATE, "a=1");
        h.append(TRACESTATE, "b=2");
        let ctx = TraceContext::from_headers(&h).unwrap();
        assert_eq!(ctx.tracestate(), Some("a=1,b=2"));
        let mut out = HeaderMap::new();
        ctx.child().inject(&mut out);
        assert_eq!(out.get(TRACESTATE), Some("a=1,b=2"));
        assert!(TraceContext::from_headers(&HeaderMap::new()).is_none());
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = TraceContext::generate();
        let b = TraceContext::generate();
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(TraceContext::parse(&a.traceparent()).unwrap(), a);
    }

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
