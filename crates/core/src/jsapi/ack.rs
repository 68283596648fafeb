//! JetStream acks on the wire, both ways: the `$JS.ACK` reply subject a
//! delivery carries (written by a server, read by a client) and the ack
//! bodies (`+ACK`, `-NAK {"delay":..}`, `+TERM`, `+WPI`, `+NXT`), written
//! by a client and read by a server.

use std::time::Duration;

use bytes::Bytes;

use super::{duration_to_nanos, nanos_to_duration, NakOptionsJson};
use crate::AckKind;

/// What a JetStream ack subject says about a delivered message:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<nanos>.<pending>`
/// (v1), or the v2 form with domain and account hash before the stream
/// (and a trailing token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckSubject<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The consumer.
    pub consumer: &'a str,
    /// Which delivery of the message this is (1 for the first).
    pub delivered: u64,
    /// The message's stream sequence.
    pub stream_seq: u64,
    /// The delivery's consumer sequence.
    pub consumer_seq: u64,
    /// When the message was stored, in nanoseconds since the Unix epoch.
    pub time_nanos: u64,
    /// Messages still pending for the consumer after this one.
    pub pending: u64,
}

/// A non-empty run of ASCII digits as a u64; `None` otherwise or on overflow.
fn decimal(digits: &str) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.bytes().try_fold(0u64, |n, d| {
        let d = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

impl<'a> AckSubject<'a> {
    /// Parses a reply subject; `None` when it is not an ack subject.
    pub fn parse(subject: &'a str) -> Option<Self> {
        // The first 12 tokens (all of the v2 form) on the stack.
        let mut t: [&str; 12] = [""; 12];
        let mut len = 0;
        for token in subject.split('.') {
            if let Some(slot) = t.get_mut(len) {
                *slot = token;
            }
            len += 1;
        }
        if len < 9 || t[0] != "$JS" || t[1] != "ACK" {
            return None;
        }
        let base = if len == 9 { 2 } else { 4 };
        let num = |i: usize| t.get(base + 2 + i).and_then(|s| decimal(s));
        let (stream, consumer) = (t[base], t[base + 1]);
        if stream.is_empty() || consumer.is_empty() {
            return None;
        }
        Some(AckSubject {
            stream,
            consumer,
            delivered: num(0)?,
            stream_seq: num(1)?,
            consumer_seq: num(2)?,
            time_nanos: num(3)?,
            pending: num(4)?,
        })
    }

    /// The v1 subject, as nats-server 2.9 writes it.
    pub fn to_subject(&self) -> String {
        let mut s = String::with_capacity(
            "$JS.ACK...".len() + self.stream.len() + self.consumer.len() + 5 * 21,
        );
        s.push_str("$JS.ACK.");
        s.push_str(self.stream);
        s.push('.');
        s.push_str(self.consumer);
        let mut n = itoa::Buffer::new();
        for v in [
            self.delivered,
            self.stream_seq,
            self.consumer_seq,
            self.time_nanos,
            self.pending,
        ] {
            s.push('.');
            s.push_str(n.format(v));
        }
        s
    }
}

/// The body of an ack of `kind`.
pub fn ack_payload(kind: AckKind) -> Bytes {
    match kind {
        AckKind::Ack => Bytes::from_static(b"+ACK"),
        AckKind::Nak(None) => Bytes::from_static(b"-NAK"),
        AckKind::Nak(Some(d)) if d.is_zero() => Bytes::from_static(b"-NAK"),
        AckKind::Nak(Some(d)) => {
            let delay = NakOptionsJson {
                delay: duration_to_nanos(d),
            };
            let mut payload = b"-NAK ".to_vec();
            // Serializing an integer cannot fail.
            let _ = serde_json::to_writer(&mut payload, &delay);
            Bytes::from(payload)
        }
        AckKind::Term => Bytes::from_static(b"+TERM"),
        AckKind::InProgress => Bytes::from_static(b"+WPI"),
    }
}

/// What an ack body asks of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckRequest<'a> {
    /// Settle the delivery.
    Settle(AckKind),
    /// `+NXT`: acknowledge it, then serve a pull request with this body.
    Next(&'a [u8]),
}

/// Reads an ack body as nats-server does: empty is `+ACK`, `-NAK` may carry
/// `{"delay": <ns>}`, `+TERM` a reason; `None` for anything else.
pub fn parse_ack_payload(body: &[u8]) -> Option<AckRequest<'_>> {
    let body = body.trim_ascii();
    let (word, rest) = match body.iter().position(u8::is_ascii_whitespace) {
        Some(i) => (&body[..i], body[i..].trim_ascii()),
        None => (body, &b""[..]),
    };
    Some(match word {
        b"" | b"+ACK" => AckRequest::Settle(AckKind::Ack),
        b"-NAK" => {
            let delay = if rest.is_empty() {
                None
            } else {
                let d: NakOptionsJson = serde_json::from_slice(rest).ok()?;
                (d.delay > 0).then(|| nanos_to_duration(d.delay))
            };
            AckRequest::Settle(AckKind::Nak(delay.filter(|d| *d > Duration::ZERO)))
        }
        b"+TERM" => AckRequest::Settle(AckKind::Term),
        b"+WPI" => AckRequest::Settle(AckKind::InProgress),
        b"+NXT" => AckRequest::Next(rest),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_v1_and_v2_parse() {
        let v1 = AckSubject::parse("$JS.ACK.S.C.1.7.3.1700000000000000000.2").unwrap();
        assert_eq!((v1.stream, v1.consumer), ("S", "C"));
        assert_eq!((v1.stream_seq, v1.consumer_seq, v1.pending), (7, 3, 2));
        assert_eq!(v1.delivered, 1);
        assert_eq!(v1.to_subject(), "$JS.ACK.S.C.1.7.3.1700000000000000000.2");
        let v2 = AckSubject::parse("$JS.ACK.dom.acc.S.C.1.7.3.1700000000000000000.2.tok").unwrap();
        assert_eq!((v2.stream, v2.consumer), ("S", "C"));
        assert_eq!((v2.stream_seq, v2.consumer_seq, v2.pending), (7, 3, 2));
        assert!(AckSubject::parse("_INBOX.x").is_none());
        // Signs, empty tokens and overflow are not numbers.
        for bad in [
            "$JS.ACK.S.C.+1.7.3.1.2",
            "$JS.ACK.S.C.1..3.1.2",
            "$JS.ACK.S.C.1.7.3.18446744073709551616.2",
            "$JS.ACK.S.C.1.7a.3.1.2",
            "$JS.ACK..C.1.7.3.1.2",
        ] {
            assert!(AckSubject::parse(bad).is_none(), "{bad}");
        }
        let max = AckSubject::parse("$JS.ACK.S.C.1.7.3.18446744073709551615.2").unwrap();
        assert_eq!(max.time_nanos, u64::MAX);
    }

    #[test]
    fn ack_bodies_round_trip() {
        for kind in [
            AckKind::Ack,
            AckKind::Nak(None),
            AckKind::Nak(Some(Duration::from_millis(5))),
            AckKind::Term,
            AckKind::InProgress,
        ] {
            assert_eq!(
                parse_ack_payload(&ack_payload(kind)),
                Some(AckRequest::Settle(kind))
            );
        }
        assert_eq!(
            ack_payload(AckKind::Nak(Some(Duration::from_millis(5)))),
            "-NAK {\"delay\":5000000}"
        );
        assert_eq!(
            parse_ack_payload(b""),
            Some(AckRequest::Settle(AckKind::Ack))
        );
        assert_eq!(
            parse_ack_payload(b"+TERM no"),
            Some(AckRequest::Settle(AckKind::Term))
        );
        assert_eq!(parse_ack_payload(b"+NXT 5"), Some(AckRequest::Next(b"5")));
        assert_eq!(parse_ack_payload(b"bogus"), None);
    }
}
