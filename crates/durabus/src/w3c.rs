//! The W3C Trace Context values: trace and span ids, the `traceparent`
//! format (parse and print) and the header names durabus reads and writes.
//!
//! What both sides of propagation share: [`crate::context`] keeps a
//! [`TraceContext`] in its task-local scope, and [`crate::trace`] stamps
//! publishes with it. Both import this module, never each other the wrong
//! way round (trace -> context -> w3c). Its items are public through
//! [`crate::trace`].

use std::fmt;
use std::sync::Arc;

use durabus_core::HeaderMap;

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
    pub(crate) trace_id: TraceId,
    parent_id: SpanId,
    flags: u8,
    pub(crate) state: Option<Arc<str>>,
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
}
