//! The JetStream API error table (`durabus_core::api_error`) against a real
//! nats-server: each code durabus maps is provoked with a raw API request
//! or publish, its `code` and `err_code` checked against the table, its
//! typed error checked, and, where the backend can meet it, the backend's
//! error for the same mistake.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use durabus_core::api_error::{codes, ApiErrorCode, Overlap};
use durabus_core::{
    ApiError, ApiRequest, Backend, ConfigError, ConsumerConfig, DeliverPolicy, DiscardPolicy,
    Error, Message, PurgeRequest, StorageType, StreamConfig,
};
use durabus_nats::{NatsBackend, NatsOptions};
use durabus_testkit::nats::NatsServer;
use serde_json::{json, Value};

async fn client() -> async_nats::Client {
    async_nats::connect(NatsServer::shared().url())
        .await
        .expect("connect")
}

async fn backend() -> NatsBackend {
    NatsBackend::connect(&NatsServer::shared().url(), NatsOptions::default())
        .await
        .expect("connect")
}

/// The error of a JetStream answer; panics on success.
fn error_of(payload: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(payload).unwrap();
    let e = v
        .get("error")
        .unwrap_or_else(|| panic!("expected an error, got {v}"));
    serde_json::from_value(e.clone()).unwrap()
}

/// The error nats-server answers to `$JS.API.<what>` with `body`.
async fn refused(c: &async_nats::Client, what: &str, body: Value) -> ApiError {
    let m = c
        .request(format!("$JS.API.{what}"), body.to_string().into())
        .await
        .unwrap();
    error_of(&m.payload)
}

/// The error nats-server acks a publish of `size` bytes with.
async fn refused_publish(
    c: &async_nats::Client,
    subject: &str,
    headers: &[(&str, &str)],
    size: usize,
) -> ApiError {
    let mut h = async_nats::HeaderMap::new();
    for (n, v) in headers {
        h.insert(*n, *v);
    }
    let m = c
        .request_with_headers(subject.to_owned(), h, vec![b'x'; size].into())
        .await
        .unwrap();
    error_of(&m.payload)
}

/// Asserts that the server answered with `entry`'s status and error code.
fn assert_entry(e: &ApiError, entry: ApiErrorCode) {
    assert_eq!(
        (e.code, e.err_code),
        (entry.code, entry.err_code),
        "{} expected, got {e:?}",
        entry.name
    );
}

/// A fresh memory stream `name` on `<lowercase name>.>` with `extra`
/// JetStream settings, created raw.
async fn stream(c: &async_nats::Client, name: &str, extra: Value) {
    let _ = c
        .request(format!("$JS.API.STREAM.DELETE.{name}"), "".into())
        .await;
    let mut cfg = json!({
        "name": name,
        "subjects": [format!("{}.>", name.to_lowercase())],
        "storage": "memory",
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let m = c
        .request(
            format!("$JS.API.STREAM.CREATE.{name}"),
            cfg.to_string().into(),
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&m.payload).unwrap();
    assert!(v.get("error").is_none(), "{v}");
}

fn config(name: &str) -> StreamConfig {
    StreamConfig::new(name)
        .subjects([format!("{}.>", name.to_lowercase())])
        .storage(StorageType::Memory)
}

#[tokio::test]
async fn stream_not_found_10059() {
    let c = client().await;
    let e = refused(&c, "STREAM.INFO.AE_NOPE", json!({})).await;
    assert_entry(&e, codes::STREAM_NOT_FOUND);
    let got = e.to_error(&ApiRequest::stream("AE_NOPE"));
    assert!(
        matches!(&got, Error::StreamNotFound { name } if name == "AE_NOPE"),
        "{got}"
    );
    let got = backend().await.stream_info("AE_NOPE").await.unwrap_err();
    assert!(
        matches!(&got, Error::StreamNotFound { name } if name == "AE_NOPE"),
        "{got}"
    );
}

#[tokio::test]
async fn consumer_not_found_10014() {
    let c = client().await;
    stream(&c, "AE_CNF", json!({})).await;
    let e = refused(&c, "CONSUMER.INFO.AE_CNF.NOPE", json!({})).await;
    assert_entry(&e, codes::CONSUMER_NOT_FOUND);
    let got = e.to_error(&ApiRequest::consumer("AE_CNF", "NOPE"));
    assert!(
        matches!(&got, Error::ConsumerNotFound { stream, name } if stream == "AE_CNF" && name == "NOPE"),
        "{got}"
    );
    let got = backend()
        .await
        .consumer_info("AE_CNF", "NOPE")
        .await
        .unwrap_err();
    assert!(matches!(got, Error::ConsumerNotFound { .. }), "{got}");
}

#[tokio::test]
async fn stream_name_in_use_10058() {
    let c = client().await;
    stream(&c, "AE_NIU", json!({})).await;
    let other = json!({"name": "AE_NIU", "subjects": ["ae_niu.x"], "storage": "memory"});
    let e = refused(&c, "STREAM.CREATE.AE_NIU", other).await;
    assert_entry(&e, codes::STREAM_NAME_IN_USE);
    let got = e.to_error(&ApiRequest::stream("AE_NIU"));
    assert!(
        matches!(&got, Error::StreamNameInUse { name } if name == "AE_NIU"),
        "{got}"
    );
    let got = backend()
        .await
        .create_stream(StreamConfig::new("AE_NIU").subjects(["ae_niu.x"]))
        .await
        .unwrap_err();
    assert!(matches!(got, Error::StreamNameInUse { .. }), "{got}");
}

#[tokio::test]
async fn consumer_name_in_use_10013() {
    let c = client().await;
    stream(&c, "AE_CIU", json!({})).await;
    let push = |deliver: &str| {
        json!({"stream_name": "AE_CIU", "config": {
            "durable_name": "P", "ack_policy": "explicit", "deliver_subject": deliver,
        }})
    };
    let m = c
        .request(
            "$JS.API.CONSUMER.DURABLE.CREATE.AE_CIU.P".to_owned(),
            push("ae_ciu_deliver.a").to_string().into(),
        )
        .await
        .unwrap();
    assert!(serde_json::from_slice::<Value>(&m.payload)
        .unwrap()
        .get("error")
        .is_none());
    // A push consumer with a subscriber cannot move to another subject.
    let _sub = c.subscribe("ae_ciu_deliver.a".to_owned()).await.unwrap();
    c.flush().await.unwrap();
    let e = refused(
        &c,
        "CONSUMER.DURABLE.CREATE.AE_CIU.P",
        push("ae_ciu_deliver.b"),
    )
    .await;
    assert_entry(&e, codes::CONSUMER_NAME_IN_USE);
    let got = e.to_error(&ApiRequest::consumer("AE_CIU", "P"));
    assert!(
        matches!(&got, Error::ConsumerNameInUse { stream, name } if stream == "AE_CIU" && name == "P"),
        "{got}"
    );
    // The backend refuses a pull consumer of a push consumer's name.
    let got = backend()
        .await
        .create_consumer("AE_CIU", ConsumerConfig::durable("P"))
        .await
        .unwrap_err();
    assert!(matches!(got, Error::ConsumerNameInUse { .. }), "{got}");
}

#[tokio::test]
async fn subjects_overlap_10065() {
    let c = client().await;
    stream(&c, "AE_OVL", json!({})).await;
    let _ = c
        .request("$JS.API.STREAM.DELETE.AE_OVL2".to_owned(), "".into())
        .await;
    let e = refused(
        &c,
        "STREAM.CREATE.AE_OVL2",
        json!({"name": "AE_OVL2", "subjects": ["ae_ovl.a"], "storage": "memory"}),
    )
    .await;
    assert_entry(&e, codes::SUBJECTS_OVERLAP);
    let where_ = Overlap {
        subject: "ae_ovl.a",
        other: "AE_OVL",
        other_subject: "ae_ovl.>",
    };
    let got = e.to_error(&ApiRequest::stream("AE_OVL2").overlap(where_));
    assert!(matches!(got, Error::SubjectsOverlap { .. }), "{got}");
    let got = backend()
        .await
        .create_stream(StreamConfig::new("AE_OVL2").subjects(["ae_ovl.a"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&got, Error::SubjectsOverlap { subject, other, other_subject }
            if subject == "ae_ovl.a" && other == "AE_OVL" && other_subject == "ae_ovl.>"),
        "{got}"
    );
}

#[tokio::test]
async fn wrong_last_sequence_10071() {
    let c = client().await;
    stream(&c, "AE_WLS", json!({})).await;
    let b = backend().await;
    b.publish(Message::new("ae_wls.a", "1")).await.unwrap();
    let e = refused_publish(&c, "ae_wls.a", &[("Nats-Expected-Last-Sequence", "9")], 1).await;
    assert_entry(&e, codes::WRONG_LAST_SEQUENCE);
    let mut m = Message::new("ae_wls.a", "x");
    m.headers.append("Nats-Expected-Last-Sequence", "9");
    let got = e.to_error(&ApiRequest::publish("AE_WLS", &m, 0));
    assert!(
        matches!(
            got,
            Error::WrongLastSequence {
                expected: 9,
                current: 1
            }
        ),
        "{got}"
    );
    let got = b.publish(m).await.unwrap_err();
    assert!(
        matches!(
            got,
            Error::WrongLastSequence {
                expected: 9,
                current: 1
            }
        ),
        "{got}"
    );
}

#[tokio::test]
async fn wrong_stream_10060() {
    let c = client().await;
    stream(&c, "AE_WST", json!({})).await;
    let e = refused_publish(&c, "ae_wst.a", &[("Nats-Expected-Stream", "X")], 1).await;
    assert_entry(&e, codes::WRONG_STREAM);
    let mut m = Message::new("ae_wst.a", "x");
    m.headers.append("Nats-Expected-Stream", "X");
    let got = e.to_error(&ApiRequest::publish("AE_WST", &m, 0));
    assert!(
        matches!(&got, Error::WrongStream { expected, actual } if expected == "X" && actual == "AE_WST"),
        "{got}"
    );
    let got = backend().await.publish(m).await.unwrap_err();
    assert!(matches!(got, Error::WrongStream { .. }), "{got}");
}

#[tokio::test]
async fn message_too_large_10054() {
    let c = client().await;
    stream(&c, "AE_BIG", json!({"max_msg_size": 50})).await;
    let e = refused_publish(&c, "ae_big.a", &[], 100).await;
    assert_entry(&e, codes::MESSAGE_TOO_LARGE);
    let m = Message::new("ae_big.a", vec![b'x'; 100]);
    let got = e.to_error(&ApiRequest::publish("AE_BIG", &m, 50));
    assert!(
        matches!(got, Error::MaxPayloadExceeded { size: 100, max: 50 }),
        "{got}"
    );
    let got = backend().await.publish(m).await.unwrap_err();
    assert!(
        matches!(got, Error::MaxPayloadExceeded { size: 100, max: 50 }),
        "{got}"
    );
}

#[tokio::test]
async fn store_failed_10077_is_a_full_stream() {
    let c = client().await;
    stream(&c, "AE_FULL", json!({"max_msgs": 1, "discard": "new"})).await;
    let b = backend().await;
    b.publish(Message::new("ae_full.a", "1")).await.unwrap();
    let e = refused_publish(&c, "ae_full.a", &[], 1).await;
    assert_entry(&e, codes::STORE_FAILED);
    assert_eq!(e.description, "maximum messages exceeded");
    let m = Message::new("ae_full.a", "2");
    let got = e.to_error(&ApiRequest::publish("AE_FULL", &m, 0));
    assert!(matches!(got, Error::StreamFull { .. }), "{got}");
    let got = b.publish(m).await.unwrap_err();
    assert!(
        matches!(&got, Error::StreamFull { stream, limit } if stream == "AE_FULL" && limit == "maximum messages exceeded"),
        "{got}"
    );
    // The configuration durabus writes gives the same answer.
    let _ = b.delete_stream("AE_FULL2").await;
    b.create_stream(
        config("AE_FULL2")
            .max_msgs(1u64)
            .discard(DiscardPolicy::New),
    )
    .await
    .unwrap();
    b.publish(Message::new("ae_full2.a", "1")).await.unwrap();
    let got = b
        .publish(Message::new("ae_full2.a", "2"))
        .await
        .unwrap_err();
    assert!(matches!(got, Error::StreamFull { .. }), "{got}");
}

#[tokio::test]
async fn no_message_found_10037() {
    let c = client().await;
    stream(&c, "AE_NMF", json!({})).await;
    let e = refused(&c, "STREAM.MSG.GET.AE_NMF", json!({"seq": 99})).await;
    assert_entry(&e, codes::NO_MESSAGE_FOUND);
    let got = e.to_error(&ApiRequest::stream("AE_NMF").what("at sequence 99"));
    assert!(
        matches!(&got, Error::MessageNotFound { stream, what } if stream == "AE_NMF" && what == "at sequence 99"),
        "{got}"
    );
    let got = backend().await.get_message("AE_NMF", 99).await.unwrap_err();
    assert!(matches!(got, Error::MessageNotFound { .. }), "{got}");
}

#[tokio::test]
async fn sequence_not_found_10043() {
    let c = client().await;
    stream(&c, "AE_SNF", json!({})).await;
    let e = refused(
        &c,
        "STREAM.MSG.DELETE.AE_SNF",
        json!({"seq": 99, "no_erase": true}),
    )
    .await;
    assert_entry(&e, codes::SEQUENCE_NOT_FOUND);
    let got = e.to_error(&ApiRequest::stream("AE_SNF").what("at sequence 99"));
    assert!(matches!(got, Error::MessageNotFound { .. }), "{got}");
    let got = backend()
        .await
        .delete_message("AE_SNF", 99)
        .await
        .unwrap_err();
    assert!(matches!(got, Error::MessageNotFound { .. }), "{got}");
}

#[tokio::test]
async fn msg_delete_failed_10057_is_a_denied_delete() {
    let c = client().await;
    stream(&c, "AE_DDEL", json!({"deny_delete": true})).await;
    let b = backend().await;
    b.publish(Message::new("ae_ddel.a", "1")).await.unwrap();
    let e = refused(
        &c,
        "STREAM.MSG.DELETE.AE_DDEL",
        json!({"seq": 1, "no_erase": true}),
    )
    .await;
    assert_entry(&e, codes::MSG_DELETE_FAILED);
    let got = e.to_error(&ApiRequest::stream("AE_DDEL"));
    assert!(
        matches!(
            got,
            Error::Denied {
                operation: "delete",
                ..
            }
        ),
        "{got}"
    );
    let got = b.delete_message("AE_DDEL", 1).await.unwrap_err();
    assert!(
        matches!(
            got,
            Error::Denied {
                operation: "delete",
                ..
            }
        ),
        "{got}"
    );
}

#[tokio::test]
async fn purge_failed_10110_is_a_denied_purge() {
    let c = client().await;
    stream(&c, "AE_DPUR", json!({"deny_purge": true})).await;
    let e = refused(&c, "STREAM.PURGE.AE_DPUR", json!({})).await;
    assert_entry(&e, codes::PURGE_FAILED);
    let got = e.to_error(&ApiRequest::stream("AE_DPUR"));
    assert!(
        matches!(
            got,
            Error::Denied {
                operation: "purge",
                ..
            }
        ),
        "{got}"
    );
    let got = backend()
        .await
        .purge_stream("AE_DPUR", PurgeRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            got,
            Error::Denied {
                operation: "purge",
                ..
            }
        ),
        "{got}"
    );
}

#[tokio::test]
async fn rollup_failed_10111_is_a_denied_rollup() {
    let c = client().await;
    stream(&c, "AE_ROLL", json!({})).await;
    let e = refused_publish(&c, "ae_roll.a", &[("Nats-Rollup", "sub")], 1).await;
    assert_entry(&e, codes::ROLLUP_FAILED);
    let mut m = Message::new("ae_roll.a", "x");
    m.headers.append("Nats-Rollup", "sub");
    let got = e.to_error(&ApiRequest::publish("AE_ROLL", &m, 0));
    assert!(
        matches!(
            got,
            Error::Denied {
                operation: "rollup",
                ..
            }
        ),
        "{got}"
    );
    let got = backend().await.publish(m).await.unwrap_err();
    assert!(
        matches!(
            got,
            Error::Denied {
                operation: "rollup",
                ..
            }
        ),
        "{got}"
    );
}

#[tokio::test]
async fn invalid_stream_config_10052() {
    let c = client().await;
    let sealed =
        json!({"name": "AE_CFG2", "subjects": ["ae_cfg2.>"], "storage": "memory", "sealed": true});
    let e = refused(&c, "STREAM.CREATE.AE_CFG2", sealed).await;
    assert_entry(&e, codes::INVALID_STREAM_CONFIG);
    let got = e.to_error(&ApiRequest::stream("AE_CFG2"));
    assert!(matches!(got, Error::InvalidConfig { .. }), "{got}");
    // nats-server 2.9 refuses stream updates with it too.
    stream(&c, "AE_CFG", json!({})).await;
    let file = json!({"name": "AE_CFG", "subjects": ["ae_cfg.>"], "storage": "file"});
    let e = refused(&c, "STREAM.UPDATE.AE_CFG", file).await;
    assert_entry(&e, codes::INVALID_STREAM_CONFIG);
    let got = e.to_error(&ApiRequest::stream("AE_CFG").config());
    assert!(
        matches!(&got, Error::InvalidConfig { reason: ConfigError::Refused { description } } if description.contains("storage type")),
        "{got}"
    );
    let got = backend()
        .await
        .update_stream(config("AE_CFG").storage(StorageType::File))
        .await
        .unwrap_err();
    assert!(matches!(got, Error::InvalidConfig { .. }), "{got}");
}

#[tokio::test]
async fn consumer_create_10012_is_a_refused_configuration() {
    let c = client().await;
    stream(&c, "AE_CC", json!({})).await;
    let b = backend().await;
    b.create_consumer("AE_CC", ConsumerConfig::durable("D"))
        .await
        .unwrap();
    let update = json!({"stream_name": "AE_CC", "config": {
        "durable_name": "D", "ack_policy": "explicit", "deliver_policy": "new",
    }});
    let e = refused(&c, "CONSUMER.DURABLE.CREATE.AE_CC.D", update).await;
    assert_entry(&e, codes::CONSUMER_CREATE);
    let got = e.to_error(&ApiRequest::consumer("AE_CC", "D").config());
    assert!(
        matches!(&got, Error::InvalidConfig { reason: ConfigError::Refused { description } } if description.contains("deliver policy")),
        "{got}"
    );
    let got = b
        .update_consumer(
            "AE_CC",
            ConsumerConfig::durable("D").deliver_policy(DeliverPolicy::New),
        )
        .await
        .unwrap_err();
    assert!(matches!(got, Error::InvalidConfig { .. }), "{got}");
}

#[tokio::test]
async fn bad_request_10003() {
    let c = client().await;
    stream(&c, "AE_BAD", json!({})).await;
    let e = refused(&c, "STREAM.MSG.GET.AE_BAD", json!({})).await;
    assert_entry(&e, codes::BAD_REQUEST);
    let got = e.to_error(&ApiRequest::stream("AE_BAD"));
    assert!(matches!(got, Error::InvalidArgument { .. }), "{got}");
}

#[tokio::test]
async fn a_code_outside_the_table_keeps_its_codes() {
    let c = client().await;
    stream(&c, "AE_MSGID", json!({})).await;
    // Nats-Expected-Last-Msg-Id: durabus has no typed error for it.
    let e = refused_publish(&c, "ae_msgid.a", &[("Nats-Expected-Last-Msg-Id", "x")], 1).await;
    assert_eq!((e.code, e.err_code), (400, 10070));
    let got = e.to_error(&ApiRequest::stream("AE_MSGID"));
    assert!(
        matches!(
            &got,
            Error::Server {
                code: 400,
                err_code: 10070,
                ..
            }
        ),
        "{got}"
    );
}
