//! What the NATS backend reads from JetStream deliveries beside JSON: the
//! `$JS.ACK` reply subject of a delivered message, and received subjects.
//! The JetStream API's JSON itself is `durabus_core::jsapi`; its errors
//! are `durabus_core::ApiError`s (mapped in `durabus_core::api_error`).

use durabus_core::ByteString;

/// What a JetStream ack subject says about a delivered message:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<nanos>.<pending>`
/// (v1), or the v2 form with domain and account hash (and a trailing token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckInfo {
    /// Which delivery of the message this is (1 for the first).
    pub(crate) delivered: u64,
    pub(crate) stream_seq: u64,
    pub(crate) consumer_seq: u64,
    pub(crate) time_nanos: u64,
    pub(crate) pending: u64,
}

/// A non-empty run of ASCII digits as a u64; `None` otherwise or on overflow.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        let d = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// A received subject as the messages durabus yields carry it. async-nats
/// gives each received subject a buffer of its own, so this moves that
/// buffer instead of copying it.
pub(crate) fn shared_subject(subject: async_nats::Subject) -> ByteString {
    ByteString::from(subject.into_string())
}

pub(crate) fn parse_ack_subject(reply: &str) -> Option<AckInfo> {
    // The first 12 tokens (all of the v2 form) on the stack: no allocation.
    let mut t: [&[u8]; 12] = [b""; 12];
    let mut len = 0;
    for token in reply.as_bytes().split(|b| *b == b'.') {
        if let Some(slot) = t.get_mut(len) {
            *slot = token;
        }
        len += 1;
    }
    if len < 9 || t[0] != b"$JS" || t[1] != b"ACK" {
        return None;
    }
    let base = if len == 9 { 4 } else { 6 };
    let num = |i: usize| t.get(base + i).and_then(|s| decimal(s));
    Some(AckInfo {
        delivered: num(0)?,
        stream_seq: num(1)?,
        consumer_seq: num(2)?,
        time_nanos: num(3)?,
        pending: num(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_v1_and_v2_parse() {
        let v1 = parse_ack_subject("$JS.ACK.S.C.1.7.3.1700000000000000000.2").unwrap();
        assert_eq!((v1.stream_seq, v1.consumer_seq, v1.pending), (7, 3, 2));
        assert_eq!(v1.delivered, 1);
        let v2 = parse_ack_subject("$JS.ACK.dom.acc.S.C.1.7.3.1700000000000000000.2.tok").unwrap();
        assert_eq!((v2.stream_seq, v2.consumer_seq, v2.pending), (7, 3, 2));
        assert!(parse_ack_subject("_INBOX.x").is_none());
        // Signs, empty tokens and overflow are not numbers.
        for bad in [
            "$JS.ACK.S.C.+1.7.3.1.2",
            "$JS.ACK.S.C.1..3.1.2",
            "$JS.ACK.S.C.1.7.3.18446744073709551616.2",
            "$JS.ACK.S.C.1.7a.3.1.2",
        ] {
            assert!(parse_ack_subject(bad).is_none(), "{bad}");
        }
        let max = parse_ack_subject("$JS.ACK.S.C.1.7.3.18446744073709551615.2").unwrap();
        assert_eq!(max.time_nanos, u64::MAX);
    }
}
