//! KV interop on a real nats-server: a bucket written through durabus is
//! read correctly by async-nats's own KV module, and the other way round.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use durabus::kv::Operation;
use durabus::{Error, KvConfig};
use durabus_testkit::nats::NatsServer;
use futures::StreamExt;

async fn clients(server: &NatsServer) -> (durabus::Bus, jetstream::Context) {
    let bus = durabus::connect(&server.url()).await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    (bus, jetstream::new(client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_written_by_durabus_reads_back_in_async_nats() {
    let server = NatsServer::shared();
    let (bus, js) = clients(server).await;
    let ours = bus
        .create_kv(KvConfig::new("from_durabus").history(5))
        .await
        .unwrap();
    let r1 = ours.put("users.1", "ann").await.unwrap();
    let r2 = ours.update("users.1", "anna", r1).await.unwrap();
    ours.put("users.2", "bob").await.unwrap();
    let del = ours.delete("users.2").await.unwrap();
    ours.put("tmp", "x").await.unwrap();
    ours.put("tmp", "y").await.unwrap();
    ours.purge("tmp").await.unwrap();

    let theirs = js.get_key_value("from_durabus").await.unwrap();
    assert_eq!(
        theirs.get("users.1").await.unwrap(),
        Some(Bytes::from("anna"))
    );
    let e = theirs.entry("users.1").await.unwrap().unwrap();
    assert_eq!((e.revision, e.operation), (r2, kv::Operation::Put));
    assert_eq!(theirs.get("users.2").await.unwrap(), None);
    let e = theirs.entry("users.2").await.unwrap().unwrap();
    assert_eq!((e.revision, e.operation), (del, kv::Operation::Delete));
    let history: Vec<_> = theirs
        .history("users.1")
        .await
        .unwrap()
        .map(|e| e.unwrap().value)
        .collect()
        .await;
    assert_eq!(history, [Bytes::from("ann"), Bytes::from("anna")]);
    let tmp: Vec<_> = theirs
        .history("tmp")
        .await
        .unwrap()
        .map(|e| e.unwrap().operation)
        .collect()
        .await;
    assert_eq!(tmp, [kv::Operation::Purge]);
    let mut keys: Vec<String> = theirs
        .keys()
        .await
        .unwrap()
        .map(|k| k.unwrap())
        .collect()
        .await;
    keys.sort();
    assert_eq!(keys, ["users.1"]);
    // Their CAS sees our revisions, and their create refuses our key.
    assert!(theirs.update("users.1", "x".into(), r1).await.is_err());
    assert!(theirs.create("users.1", "x".into()).await.is_err());
    theirs.create("users.2", "bob again".into()).await.unwrap();
    assert_eq!(
        ours.get("users.2").await.unwrap().as_deref(),
        Some(&b"bob again"[..])
    );
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_written_by_async_nats_reads_back_in_durabus() {
    let server = NatsServer::shared();
    let (bus, js) = clients(server).await;
    // async-nats's create_key_value first queries the account, whose reply
    // from nats-server 2.9 it cannot parse; it then creates this stream
    // (`kv_to_stream_config` in async-nats), which is done here directly.
    js.create_stream(jetstream::stream::Config {
        name: "KV_from_async_nats".into(),
        subjects: vec!["$KV.from_async_nats.>".into()],
        max_messages_per_subject: 3,
        max_message_size: 64,
        max_age: Duration::from_secs(3600),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let theirs = js.get_key_value("from_async_nats").await.unwrap();
    let r1 = theirs.put("a", "1".into()).await.unwrap();
    let r2 = theirs.update("a", "2".into(), r1).await.unwrap();
    theirs.put("b.c", "bc".into()).await.unwrap();
    theirs.put("gone", "g".into()).await.unwrap();
    theirs.delete("gone").await.unwrap();
    theirs.put("purged", "p".into()).await.unwrap();
    theirs.purge("purged").await.unwrap();

    let ours = bus.kv("from_async_nats").await.unwrap();
    let status = ours.status().await.unwrap();
    assert_eq!(status.config.history, 3);
    assert_eq!(status.config.max_value_size, Some(64));
    assert_eq!(status.config.ttl, Some(Duration::from_secs(3600)));
    // Creating it again with equal settings opens it.
    bus.create_kv(status.config.clone()).await.unwrap();

    assert_eq!(ours.get("a").await.unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(ours.entry("a").await.unwrap().unwrap().revision, r2);
    let h: Vec<_> = ours.history("a").await.unwrap();
    assert_eq!(
        h.iter().map(|e| &e.value[..]).collect::<Vec<_>>(),
        [&b"1"[..], b"2"]
    );
    assert_eq!(ours.get("gone").await.unwrap(), None);
    assert_eq!(
        ours.entry("gone").await.unwrap().unwrap().operation,
        Operation::Delete
    );
    assert_eq!(
        ours.entry("purged").await.unwrap().unwrap().operation,
        Operation::Purge
    );
    assert_eq!(ours.keys().await.unwrap(), ["a", "b.c"]);
    assert!(matches!(
        ours.update("a", "3", r1).await,
        Err(Error::WrongRevision { current, .. }) if current == r2
    ));
    assert!(matches!(
        ours.put("a", vec![0u8; 65]).await,
        Err(Error::ValueTooLarge {
            size: 65,
            max: 64,
            ..
        })
    ));
    ours.create("gone", "back").await.unwrap();

    // A durabus watch sees their changes live, and theirs sees ours.
    let mut w = ours.watch("a").await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().revision, r2);
    let mut their_watch = theirs.watch("a").await.unwrap();
    let r3 = theirs.put("a", "3".into()).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((e.revision, &e.value[..]), (r3, &b"3"[..]));
    let r4 = ours.put("a", "4").await.unwrap();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), their_watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if e.revision == r4 {
            assert_eq!(&e.value[..], b"4");
            break;
        }
    }
    bus.close().await.unwrap();
}
