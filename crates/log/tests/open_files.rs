//! File descriptors do not grow with what a store holds: an idle durable
//! consumer holds none (its journal opens when written to and closes after
//! an idle maintenance tick), so 100,000 consumers fit in any descriptor
//! limit (docs/design.md, "Consumer journal"). Alone in its binary: it
//! counts the process's descriptors.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use durabus_core::{AckKind, Backend, ConsumerConfig, Message, StreamConfig};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_durable_consumers_hold_no_file_descriptors_and_keep_their_state() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    stream(&s, StreamConfig::new("S").subjects(["s.>"])).await;
    for i in 0..10 {
        s.publish(Message::new(format!("s.{i}"), "x"))
            .await
            .unwrap();
    }
    let before = open_fds();
    for i in 0..2000 {
        s.create_consumer("S", ConsumerConfig::durable(format!("c{i}")))
            .await
            .unwrap();
    }
    let created = open_fds();
    assert!(
        created < before + 50,
        "2000 new consumers hold {} descriptors",
        created - before
    );
    // Active consumers open their journals; an idle tick closes them.
    for i in 0..20 {
        let got = s
            .fetch("S", &format!("c{i}"), 3, Duration::from_millis(10))
            .await
            .unwrap();
        for d in &got {
            s.ack_confirmed(&d.ack, AckKind::Ack).await.unwrap();
        }
    }
    let active = open_fds();
    assert!(active >= created + 20, "20 active journals are open");
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds() > created && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.contains("consumer") || p.contains("segments"))
        .collect();
    assert!(
        open_fds() <= created,
        "{} descriptors still open after idle ticks: {still:?}",
        open_fds() - created
    );
    // What the closed journals hold is what a crash leaves (no close
    // folded it into the state files).
    let image = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), image.path());
    drop(s);
    let s = open(image.path());
    for i in 0..20 {
        let info = s.consumer_info("S", &format!("c{i}")).await.unwrap();
        assert_eq!(info.ack_floor.stream_seq, 3, "c{i}");
    }
    let idle = s.consumer_info("S", "c1999").await.unwrap();
    assert_eq!(idle.num_pending, 10);
}
