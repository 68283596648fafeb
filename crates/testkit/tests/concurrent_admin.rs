//! Administrative operations racing live traffic on the embedded engine:
//! nothing hangs, nothing acknowledged is lost.

// A failed setup step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use durabus::{Error, ReplayOptions, StreamConfig};
use durabus_testkit::{file_url, temp_dir};

const WAIT: Duration = Duration::from_secs(10);

/// close() racing 8 publishers: each publish is either acknowledged or
/// refused with Closed, and every acknowledged message is in the store
/// after reopening (close makes everything acknowledged durable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_racing_publishers_keeps_every_ack() {
    for durability in ["always", "none"] {
        let dir = temp_dir();
        let url = file_url(dir.path(), durability);
        let bus = durabus::connect(&url).await.unwrap();
        bus.create_stream(StreamConfig::new("C").subjects(["c.>"]))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..8 {
            let bus = bus.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    // An in-process publish may complete without ever
                    // yielding; yield so close() gets its turn on 2 workers.
                    tokio::task::yield_now().await;
                    let payload = format!("{t}/{i}");
                    match bus.publish(format!("c.{t}"), payload.clone()).await {
                        Ok(Some(ack)) => acked.push((ack.seq, payload)),
                        Ok(None) => panic!("not captured"),
                        Err(Error::Closed) => break,
                        Err(e) => panic!("publish racing close failed with {e}, not Closed"),
                    }
                }
                acked
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokio::time::timeout(WAIT, bus.close())
            .await
            .expect("close hung")
            .unwrap();
        let mut acked = BTreeMap::new();
        for t in tasks {
            for (seq, payload) in tokio::time::timeout(WAIT, t)
                .await
                .expect("publisher hung")
                .unwrap()
            {
                assert!(
                    acked.insert(seq, payload).is_none(),
                    "seq {seq} acked twice"
                );
            }
        }
        assert!(
            !acked.is_empty(),
            "{durability}: nothing was published before close"
        );

        let bus = durabus::connect(&url).await.unwrap();
        for (seq, payload) in &acked {
            let m = bus
                .get_message("C", *seq)
                .await
                .unwrap_or_else(|e| panic!("{durability}: acked seq {seq} lost after close: {e}"));
            assert_eq!(m.payload, payload.as_bytes(), "{durability}: seq {seq}");
        }
        let st = bus.stream_info("C").await.unwrap().state;
        assert!(st.last_seq >= *acked.keys().last().unwrap());
        assert!(
            st.last_seq - (acked.len() as u64) <= 8,
            "{durability}: more than one unacked message per publisher stored: {st:?}"
        );
        bus.close().await.unwrap();
    }
}

/// delete_stream racing publishers: publishes before it are acknowledged,
/// after it are uncaptured (Ok(None)); none fails or hangs; the name can be
/// used again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_stream_racing_publishers_neither_fails_nor_hangs() {
    let bus = durabus::connect("memory:").await.unwrap();
    bus.create_stream(StreamConfig::new("D").subjects(["d.>"]))
        .await
        .unwrap();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let (mut acked, mut uncaptured) = (0u64, 0u64);
            while uncaptured < 200 {
                tokio::task::yield_now().await;
                match bus.publish("d.x", "x").await {
                    Ok(Some(_)) => acked += 1,
                    Ok(None) => uncaptured += 1,
                    Err(e) => panic!("publish racing delete_stream failed: {e}"),
                }
            }
            (acked, uncaptured)
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    tokio::time::timeout(WAIT, bus.delete_stream("D"))
        .await
        .expect("delete_stream hung")
        .unwrap();
    let (acked, _) = tokio::time::timeout(WAIT, publisher)
        .await
        .expect("publisher hung")
        .unwrap();
    assert!(acked > 0);
    let info = bus
        .create_stream(StreamConfig::new("D").subjects(["d.>"]))
        .await
        .unwrap();
    assert_eq!(info.state.messages, 0);
    assert_eq!(bus.publish("d.x", "x").await.unwrap().unwrap().seq, 1);
    bus.close().await.unwrap();
}

/// A live replay of a stream that is deleted ends (None or an error)
/// instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_replay_of_a_deleted_stream_ends() {
    let dir = temp_dir();
    for url in ["memory:".to_owned(), file_url(dir.path(), "none")] {
        let bus = durabus::connect(&url).await.unwrap();
        bus.create_stream(StreamConfig::new("R").subjects(["r.>"]))
            .await
            .unwrap();
        bus.publish("r.x", "1").await.unwrap();
        let mut replay = bus.replay("R", ReplayOptions::from_seq(1)).await.unwrap();
        assert_eq!(replay.next().await.unwrap().unwrap().seq, 1);
        bus.delete_stream("R").await.unwrap();
        match tokio::time::timeout(WAIT, replay.next()).await {
            Ok(None) | Ok(Some(Err(_))) => {}
            Ok(Some(Ok(m))) => panic!("{url}: replay of a deleted stream yielded seq {}", m.seq),
            Err(_) => {
                panic!("{url}: live replay still waiting {WAIT:?} after its stream was deleted")
            }
        }
        bus.close().await.unwrap();
    }
}
