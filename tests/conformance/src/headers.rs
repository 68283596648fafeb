//! Header rules: every backend refuses, before anything is stored or sent,
//! a header NATS could not carry (a name that is not printable ASCII
//! without `:`, a value with CR or LF), and keeps every legal one.

use durabus::{ArgumentError, Bus, Error, Message};

use crate::{assert_err, create, names, publish_captured, state};

/// Headers breaking the NATS format are `InvalidArgument` naming the header
/// and what is wrong (a value is never shown), captured or not, alone or in
/// a batch; nothing is stored.
///
/// Checks invariant 27 (docs/design.md).
pub async fn headers_nats_cannot_carry_are_refused_and_nothing_is_stored(bus: &Bus) {
    let n = names("bad_headers");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let subject = n.subject("a");
    let msg = |name: &str, value: &str| Message::new(&subject, "p").with_header(name, value);
    for (name, found) in [
        ("Bad Name", Some(' ')),
        ("a:b", Some(':')),
        ("", None),
        ("caf\u{e9}", Some('\u{e9}')),
        ("tab\there", Some('\t')),
    ] {
        assert_err!(
            bus.publish_message(msg(name, "v")).await,
            Error::InvalidArgument {
                reason: ArgumentError::HeaderName { name: ref got, found: f },
            } if got == name && f == found
        );
    }
    for (value, offset, cr) in [("a\r\nX-Injected: 1", 1, true), ("line\nbreak", 4, false)] {
        let r = bus.publish_message(msg("Tag", value)).await;
        match &r {
            Err(
                e @ Error::InvalidArgument {
                    reason:
                        ArgumentError::HeaderValue {
                            name,
                            offset: o,
                            cr: c,
                        },
                },
            ) => {
                assert_eq!((name.as_str(), *o, *c), ("Tag", offset, cr));
                assert!(!e.to_string().contains("X-Injected"), "{e}");
            }
            other => panic!("{value:?}: {:?}", other.as_ref().map(|_| ())),
        }
    }
    // Not captured by a stream: refused all the same.
    assert_err!(
        bus.publish_message(
            Message::new(format!("{}_free.x", n.root()), "p").with_header("T", "a\nb")
        )
        .await,
        Error::InvalidArgument {
            reason: ArgumentError::HeaderValue { .. }
        }
    );
    // In a batch, the bad message fails in place and the others are stored.
    let results = bus
        .publish_batch(vec![
            msg("Tag", "ok"),
            msg("Tag", "bad\r"),
            msg("Tag", "ok"),
        ])
        .await
        .unwrap();
    assert!(matches!(results[0], Ok(Some(_))), "{:?}", results[0]);
    assert!(
        matches!(
            results[1],
            Err(Error::InvalidArgument {
                reason: ArgumentError::HeaderValue { .. }
            })
        ),
        "{:?}",
        results[1]
    );
    assert!(matches!(results[2], Ok(Some(_))), "{:?}", results[2]);
    assert_eq!(state(bus, &cfg.name).await.messages, 2);
}

/// Legal but unusual headers (every token character in the name; tabs,
/// colons and non-ASCII text in the value) are stored and read back as
/// given.
///
/// Checks invariant 27 (docs/design.md).
pub async fn legal_headers_round_trip_unchanged(bus: &Bus) {
    let n = names("odd_headers");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let name = "X!#$%&'*+-.^_`|~9";
    let value = "a\tb: c \u{e9}t\u{e9} =;,\"";
    let ack = publish_captured(
        bus,
        Message::new(n.subject("a"), "p").with_header(name, value),
    )
    .await;
    let stored = bus.get_message(&cfg.name, ack.seq).await.unwrap();
    assert_eq!(
        stored.headers.get(name),
        Some(value),
        "{:?}",
        stored.headers
    );
}
