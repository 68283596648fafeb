//! Per-subject state kept as keyed hashes, with the names left in the log
//! (docs/design.md, "Per-subject state"): whatever path answers a question
//! about subjects (a lookup, the newest message of each subject read one by
//! one, or one scan of the log), the answer is what a brute-force reading
//! of every stored message gives, before and after a reopen (invariant 35).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use durabus_core::{
    AckKind, Backend, ConsumerConfig, DeliverPolicy, ReplayOptions, ReplayStart, StreamConfig,
};
use durabus_log::Store;
use rand::{Rng, SeedableRng};

/// Every stored message: seq -> subject.
async fn stored(s: &Store) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    let mut r = s
        .replay("S", ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    while let Some(m) = r.next().await {
        let m = m.unwrap();
        out.insert(m.seq, m.subject.to_string());
    }
    out
}

/// The newest seq of each subject matching `filter`, ascending, by brute force.
fn newest_matching(all: &BTreeMap<u64, String>, filter: &str) -> Vec<u64> {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (seq, subj) in all {
        if durabus_core::subject::matches(filter, subj) {
            last.insert(subj, *seq);
        }
    }
    let mut v: Vec<u64> = last.into_values().collect();
    v.sort_unstable();
    v
}

async fn replay_last_per_subject(s: &Store, filter: &str) -> Vec<u64> {
    let options = ReplayOptions {
        start: ReplayStart::LastPerSubject,
        filter: Some(filter.to_owned()),
        stop_at_end: true,
    };
    let mut r = s.replay("S", options).await.unwrap();
    let mut v = Vec::new();
    while let Some(m) = tokio::time::timeout(Duration::from_secs(5), r.next())
        .await
        .unwrap()
    {
        v.push(m.unwrap().seq);
    }
    v
}

async fn consumer_last_per_subject(s: &Store, name: &str, filter: &str, n: usize) -> Vec<u64> {
    let cfg = ConsumerConfig::durable(name)
        .filter_subject(filter)
        .deliver_policy(DeliverPolicy::LastPerSubject);
    let info = s.create_consumer("S", cfg).await.unwrap();
    let pending = info.num_pending as usize;
    assert!(pending >= n, "num_pending {pending} < {n}");
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let got = s
            .fetch("S", name, n - seqs.len(), Duration::from_millis(50))
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        for d in got {
            seqs.push(d.message.seq);
            // Under max_ack_pending: settle as it goes.
            s.ack(&d.ack, AckKind::Ack).await.unwrap();
        }
    }
    s.delete_consumer("S", name).await.unwrap();
    seqs
}

/// Publishes `n` messages over `subjects` distinct subjects (payloads of
/// `size` bytes), then deletes some, among them the newest of several
/// subjects (whose newest seq the table then no longer knows).
async fn fill(s: &Store, n: u64, subjects: u64, size: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let payload = vec![b'x'; size];
    let mut seqs = Vec::new();
    for _ in 0..n {
        let i = rng.random_range(0..subjects);
        let subj = format!("dev.{}.{}", i % 7, i);
        let ack = s
            .publish(durabus_core::Message::new(subj, payload.clone()))
            .await
            .unwrap()
            .unwrap();
        seqs.push(ack.seq);
    }
    for _ in 0..n / 20 {
        let seq = seqs[rng.random_range(0..seqs.len())];
        let _ = s.delete_message("S", seq).await;
    }
    // The newest messages are the newest of their subjects: delete a few.
    for seq in seqs.iter().rev().take(5) {
        let _ = s.delete_message("S", *seq).await;
    }
}

async fn check_all_paths(s: &Store, context: &str) {
    let all = stored(s).await;
    for filter in ["dev.>", "dev.3.*", "*.*.5", "dev.1.1"] {
        let want = newest_matching(&all, filter);
        assert_eq!(
            replay_last_per_subject(s, filter).await,
            want,
            "{context}: replay last-per-subject {filter}"
        );
        let name = format!("c{}", filter.len());
        let got = consumer_last_per_subject(s, &name, filter, want.len()).await;
        let diff: Vec<_> = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a != b)
            .take(3)
            .collect();
        assert_eq!(
            (got.len(), diff),
            (want.len(), vec![]),
            "{context}: consumer last-per-subject {filter}"
        );
    }
    let info = s.stream_info("S").await.unwrap();
    let distinct: std::collections::BTreeSet<&String> = all.values().collect();
    assert_eq!(
        info.state.num_subjects,
        distinct.len() as u64,
        "{context}: num_subjects"
    );
    // Each subject's newest by lookup.
    for subj in distinct.iter().take(50) {
        let want = newest_matching(&all, subj);
        let got = s.get_last_message("S", subj).await.unwrap();
        assert_eq!(vec![got.seq], want, "{context}: last of {subj}");
    }
}

#[tokio::test]
async fn newest_per_subject_agrees_with_a_brute_force_read_on_every_path_and_after_reopen() {
    // Few subjects over a long log (each subject's newest is read on its
    // own), and many subjects over a short one (one scan of the log).
    for (n, subjects, size) in [(3000u64, 40u64, 400usize), (3000, 2500, 8)] {
        let tmp = tempfile::tempdir().unwrap();
        {
            let s = open_with(tmp.path(), opts().segment_size(64 * 1024));
            stream(&s, StreamConfig::new("S").subjects(["dev.>"])).await;
            fill(&s, n, subjects, size, n + subjects).await;
            check_all_paths(&s, &format!("{subjects} subjects, open")).await;
            s.close().await.unwrap();
        }
        let s = open_with(tmp.path(), opts().segment_size(64 * 1024));
        check_all_paths(&s, &format!("{subjects} subjects, reopened")).await;
    }
}

#[tokio::test]
async fn a_per_subject_limit_keeps_each_subjects_newest_across_reopens_and_updates() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StreamConfig::new("S").subjects(["dev.>"]);
    {
        let s = open(tmp.path());
        stream(&s, cfg.clone()).await;
        fill(&s, 2000, 300, 16, 7).await;
        // The limit set afterwards: older seqs are derived from the log.
        s.update_stream(cfg.clone().max_msgs_per_subject(2u64))
            .await
            .unwrap();
        s.close().await.unwrap();
    }
    let s = open(tmp.path());
    for i in 0..600u64 {
        let subj = format!("dev.{}.{}", i % 7, i % 300);
        s.publish(durabus_core::Message::new(subj, "y"))
            .await
            .unwrap();
    }
    let all = stored(&s).await;
    let mut per: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (seq, subj) in &all {
        per.entry(subj).or_default().push(*seq);
    }
    assert!(
        per.values().all(|v| v.len() <= 2),
        "a subject kept more than 2"
    );
    // Each subject kept its two newest: the last two of its 600 publishes.
    for (subj, seqs) in &per {
        let got = s.get_last_message("S", subj).await.unwrap();
        assert_eq!(Some(&got.seq), seqs.last());
    }
    // Down to one per subject, then none (the table forgets older seqs).
    s.update_stream(cfg.clone().max_msgs_per_subject(1u64))
        .await
        .unwrap();
    assert_eq!(
        s.stream_info("S").await.unwrap().state.messages,
        per.len() as u64
    );
    s.update_stream(cfg).await.unwrap();
    s.publish(durabus_core::Message::new("dev.0.0", "z"))
        .await
        .unwrap();
    assert_eq!(
        s.stream_info("S").await.unwrap().state.messages,
        per.len() as u64 + 1
    );
}

#[tokio::test]
async fn many_subjects_reopen_with_their_counts_from_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let subjects = 20_000u64;
    {
        let s = open(tmp.path());
        stream(&s, StreamConfig::new("S").subjects(["dev.>"])).await;
        let batch: Vec<durabus_core::Message> = (0..subjects)
            .map(|i| durabus_core::Message::new(format!("dev.{}.{i}", i % 7), "v"))
            .collect();
        for r in s.publish_batch(batch).await.unwrap() {
            r.unwrap();
        }
        s.publish(durabus_core::Message::new("dev.0.0", "again"))
            .await
            .unwrap();
        s.close().await.unwrap();
    }
    assert!(tmp.path().join("streams/S/checkpoint").exists());
    let s = open(tmp.path());
    let info = s.stream_info("S").await.unwrap();
    assert_eq!(info.state.num_subjects, subjects);
    assert_eq!(info.state.messages, subjects + 1);
    let last = s.get_last_message("S", "dev.0.0").await.unwrap();
    assert_eq!((last.seq, &last.payload[..]), (subjects + 1, &b"again"[..]));
    let mid = s.get_last_message("S", "dev.4.10000").await.unwrap();
    assert_eq!(mid.seq, 10_001);
    // Filtered counts from the table (literal) and from the log (wildcard).
    let lit = s
        .create_consumer(
            "S",
            ConsumerConfig::durable("lit").filter_subject("dev.0.0"),
        )
        .await
        .unwrap();
    assert_eq!(lit.num_pending, 2);
    let wild = s
        .create_consumer(
            "S",
            ConsumerConfig::durable("wild").filter_subject("dev.0.*"),
        )
        .await
        .unwrap();
    assert_eq!(wild.num_pending, subjects.div_ceil(7) + 1);
}
