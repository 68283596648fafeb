//! The store's catalog (docs/design.md, "Catalog"; invariant 34): what a
//! store lists without recovering its streams is what a full recovery
//! finds, after a clean close, a crash, a damaged catalog, or beside a live
//! owner.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{copy_dir, open, opts, publish, stream};
use durabus_core::{
    AckKind, Backend, ConsumerConfig, Message, RetentionPolicy, StreamConfig, StreamInfo,
};
use durabus_log::{Durability, ManualClock, Options, Store};
use rand::{Rng, SeedableRng};

const NOW: Duration = Duration::from_millis(50);

/// What a store lists, by a full recovery of every stream: the same
/// directory copied, without its catalog.
async fn full_recovery_list(dir: &Path) -> Vec<StreamInfo> {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(dir, tmp.path());
    let _ = std::fs::remove_file(tmp.path().join("catalog"));
    let _ = std::fs::remove_file(tmp.path().join("catalog.journal"));
    let _ = std::fs::remove_file(tmp.path().join("LOCK"));
    let s = Store::open(tmp.path(), opts().read_only(true)).unwrap();
    let list = s.list_streams().await.unwrap();
    s.close().await.unwrap();
    list
}

/// Several kinds of streams, with messages, consumers and acks.
async fn fill(s: &Store) {
    stream(s, StreamConfig::new("L").subjects(["l.>"])).await;
    stream(
        s,
        StreamConfig::new("P")
            .subjects(["p.*"])
            .max_msgs_per_subject(2u64),
    )
    .await;
    stream(
        s,
        StreamConfig::new("I")
            .subjects(["i.>"])
            .retention(RetentionPolicy::Interest),
    )
    .await;
    stream(
        s,
        StreamConfig::new("W")
            .subjects(["w.>"])
            .retention(RetentionPolicy::WorkQueue),
    )
    .await;
    s.create_consumer("I", ConsumerConfig::durable("ia").filter_subject("i.a"))
        .await
        .unwrap();
    s.create_consumer("W", ConsumerConfig::durable("w"))
        .await
        .unwrap();
    s.create_consumer("L", ConsumerConfig::durable("l"))
        .await
        .unwrap();
    for i in 0..10 {
        publish(s, &format!("l.{}", i % 3), "x").await;
        publish(s, &format!("p.{}", i % 4), "y").await;
        publish(s, if i % 2 == 0 { "i.a" } else { "i.b" }, "z").await;
        publish(s, "w.1", "w").await;
    }
    s.delete_message("L", 2).await.unwrap();
    for (st, c) in [("I", "ia"), ("W", "w")] {
        let d = s.fetch(st, c, 3, NOW).await.unwrap();
        for x in &d {
            s.ack_confirmed(&x.ack, AckKind::Ack).await.unwrap();
        }
    }
    // An ephemeral consumer holds an interest stream's messages while it
    // lives: no summary can be written for it at close.
    s.create_consumer("I", ConsumerConfig::ephemeral().filter_subject("i.b"))
        .await
        .unwrap();
    publish(s, "i.b", "kept while the ephemeral consumer lives").await;
}

/// Checks invariant 34 (docs/design.md).
#[tokio::test]
async fn summaries_written_at_a_clean_close_list_what_a_full_recovery_finds() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    fill(&s).await;
    s.close().await.unwrap();
    let want = full_recovery_list(tmp.path()).await;
    assert_eq!(want.len(), 4);
    for read_only in [false, true] {
        let s = Store::open(tmp.path(), opts().read_only(read_only)).unwrap();
        assert_eq!(
            s.list_streams().await.unwrap(),
            want,
            "read-only {read_only}"
        );
        s.close().await.unwrap();
    }
}

/// Checks invariant 34 (docs/design.md).
#[tokio::test]
async fn list_streams_after_a_crash_reports_exactly_what_a_full_recovery_reports() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(tmp.path());
        fill(&s).await;
        s.close().await.unwrap();
    }
    let live = open(tmp.path());
    // Touch some streams in this session: they are marked.
    publish(&live, "l.9", "after").await;
    let d = live.fetch("W", "w", 2, NOW).await.unwrap();
    for x in &d {
        live.ack_confirmed(&x.ack, AckKind::Ack).await.unwrap();
    }
    live.purge_stream("P", Default::default()).await.unwrap();
    // The files of a running store, as a kill -9 leaves them.
    let crash = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), crash.path());
    std::fs::remove_file(crash.path().join("LOCK")).unwrap();
    live.close().await.unwrap();
    let want = full_recovery_list(crash.path()).await;
    for read_only in [true, false] {
        let s = Store::open(crash.path(), opts().read_only(read_only)).unwrap();
        assert_eq!(
            s.list_streams().await.unwrap(),
            want,
            "read-only {read_only}"
        );
        s.close().await.unwrap();
    }
}

/// Checks invariant 34 (docs/design.md).
#[tokio::test]
async fn a_missing_or_damaged_catalog_is_rebuilt_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(tmp.path());
        fill(&s).await;
        s.close().await.unwrap();
    }
    let want = full_recovery_list(tmp.path()).await;
    let catalog = std::fs::read(tmp.path().join("catalog")).unwrap();
    let journal = std::fs::read(tmp.path().join("catalog.journal")).unwrap();
    type Damage = Box<dyn Fn(&Path)>;
    let damages: Vec<(&str, Damage)> = vec![
        (
            "catalog removed",
            Box::new(|d| std::fs::remove_file(d.join("catalog")).unwrap()),
        ),
        (
            "both removed",
            Box::new(|d| {
                std::fs::remove_file(d.join("catalog")).unwrap();
                std::fs::remove_file(d.join("catalog.journal")).unwrap();
            }),
        ),
        ("catalog torn", {
            let c = catalog.clone();
            Box::new(move |d| std::fs::write(d.join("catalog"), &c[..c.len() / 2]).unwrap())
        }),
        ("catalog flipped", {
            let c = catalog.clone();
            Box::new(move |d| {
                let mut b = c.clone();
                let i = b.len() / 3;
                b[i] ^= 0x10;
                std::fs::write(d.join("catalog"), b).unwrap();
            })
        }),
        ("catalog index flipped", {
            let c = catalog.clone();
            Box::new(move |d| {
                let mut b = c.clone();
                let i = b.len() - 12;
                b[i] ^= 0x01;
                std::fs::write(d.join("catalog"), b).unwrap();
            })
        }),
        (
            "journal garbage",
            Box::new(|d| std::fs::write(d.join("catalog.journal"), b"garbage").unwrap()),
        ),
        ("journal with a torn entry", {
            let j = journal.clone();
            Box::new(move |d| {
                let mut b = j.clone();
                b.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
                std::fs::write(d.join("catalog.journal"), b).unwrap();
            })
        }),
        (
            "older format marker",
            Box::new(|d| std::fs::write(d.join("durabus.json"), br#"{"format": 1}"#).unwrap()),
        ),
    ];
    for (what, damage) in damages {
        let work = tempfile::tempdir().unwrap();
        copy_dir(tmp.path(), work.path());
        damage(work.path());
        // Read-only: the store is recovered in memory, nothing written.
        let s = Store::open(work.path(), opts().read_only(true)).unwrap();
        assert_eq!(s.list_streams().await.unwrap(), want, "{what} (read-only)");
        s.close().await.unwrap();
        // Writable: rebuilt, and what it lists is the same.
        let s = open(work.path());
        assert_eq!(s.list_streams().await.unwrap(), want, "{what}");
        assert_eq!(s.get_message("L", 1).await.unwrap().payload, "x", "{what}");
        s.close().await.unwrap();
        let marker = std::fs::read_to_string(work.path().join("durabus.json")).unwrap();
        assert!(marker.contains('2'), "{what}: {marker}");
        // ... and after that, listed from the new catalog.
        let s = Store::open(work.path(), opts().read_only(true)).unwrap();
        assert_eq!(s.list_streams().await.unwrap(), want, "{what} (rebuilt)");
        s.close().await.unwrap();
    }
}

/// A create cut off between its catalog entry and the directory's rename
/// leaves an entry without a directory: the stream is absent. A directory
/// the catalog does not list (the catalog restored from before its create,
/// or a stream copied in) is found and listed.
///
/// Checks invariant 34 (docs/design.md).
#[tokio::test]
async fn a_stream_the_catalog_and_the_directories_disagree_on_is_resolved() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let s = open(dir);
        stream(&s, StreamConfig::new("A").subjects(["a"])).await;
        publish(&s, "a", "1").await;
        s.close().await.unwrap();
    }
    let old_catalog = std::fs::read(dir.join("catalog")).unwrap();
    let old_journal = std::fs::read(dir.join("catalog.journal")).unwrap();
    {
        let s = open(dir);
        stream(&s, StreamConfig::new("B").subjects(["b"])).await;
        stream(&s, StreamConfig::new("C").subjects(["c"])).await;
        publish(&s, "b", "2").await;
        s.close().await.unwrap();
    }
    // C's create "did not finish": its directory is back in staging.
    std::fs::rename(dir.join("streams/C"), dir.join("streams/.creating-C")).unwrap();
    {
        let s = open(dir);
        let names: Vec<String> = s
            .list_streams()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.config.name)
            .collect();
        assert_eq!(names, ["A", "B"]);
        assert!(matches!(
            s.stream_info("C").await.unwrap_err(),
            durabus_core::Error::StreamNotFound { .. }
        ));
        assert_eq!(s.publish(Message::new("c", "x")).await.unwrap(), None);
        // The staging directory is gone, and C can be created again.
        assert!(!dir.join("streams/.creating-C").exists());
        stream(&s, StreamConfig::new("C").subjects(["c"])).await;
        s.close().await.unwrap();
    }
    // The catalog from before B and C: their directories are found.
    std::fs::write(dir.join("catalog"), &old_catalog).unwrap();
    std::fs::write(dir.join("catalog.journal"), &old_journal).unwrap();
    let s = open(dir);
    assert_eq!(s.stream_info("B").await.unwrap().state.messages, 1);
    let names: Vec<String> = s
        .list_streams()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.config.name)
        .collect();
    assert_eq!(names, ["A", "B", "C"]);
    assert_eq!(publish(&s, "c", "y").await, 1);
    s.close().await.unwrap();
}

/// Checks invariants 23 and 34 (docs/design.md).
#[tokio::test]
async fn a_store_opened_read_only_beside_a_writable_holder_lists_correct_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let s = open(dir);
        for i in 0..30 {
            stream(
                &s,
                StreamConfig::new(format!("S{i}")).subjects([format!("s{i}")]),
            )
            .await;
            for _ in 0..=i % 4 {
                publish(&s, &format!("s{i}"), "x").await;
            }
        }
        s.close().await.unwrap();
    }
    let holder = Store::open(dir, opts()).unwrap();
    let reader_list = |dir: &Path| {
        let dir = dir.to_path_buf();
        async move {
            let r = Store::open(&dir, opts().read_only(true)).unwrap();
            let l = r.list_streams().await.unwrap();
            r.close().await.unwrap();
            l
        }
    };
    assert_eq!(reader_list(dir).await, holder.list_streams().await.unwrap());
    // The holder changes some streams, creates and deletes others.
    for i in [3, 7, 11] {
        publish(&holder, &format!("s{i}"), "more").await;
    }
    holder.purge_stream("S5", Default::default()).await.unwrap();
    holder.delete_stream("S9").await.unwrap();
    stream(&holder, StreamConfig::new("NEW").subjects(["new"])).await;
    publish(&holder, "new", "n").await;
    let mut cfg = holder.stream_info("S12").await.unwrap().config;
    cfg.max_msgs = Some(1);
    holder.update_stream(cfg).await.unwrap();
    let want = holder.list_streams().await.unwrap();
    assert_eq!(want.len(), 30);
    assert_eq!(reader_list(dir).await, want);
    holder.close().await.unwrap();
    assert_eq!(reader_list(dir).await, want);
}

/// A store's options on `clock` (durability none).
fn clocked(clock: &Arc<ManualClock>) -> Options {
    Options::default()
        .durability(Durability::None)
        .clock(clock.clone())
}

/// Creates `AGE`, capturing `age`, its messages kept 60 s.
async fn age_stream(s: &Store) {
    stream(
        s,
        StreamConfig::new("AGE")
            .subjects(["age"])
            .max_age(Duration::from_secs(60))
            .duplicate_window(Duration::from_secs(10)),
    )
    .await;
}

/// Checks invariants 21 and 34 (docs/design.md).
#[tokio::test]
async fn lazily_opened_streams_apply_retention_and_age_limits_on_first_use() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clock = Arc::new(ManualClock::new());
    let o = || clocked(&clock);
    let live = Store::open(dir, o()).unwrap();
    age_stream(&live).await;
    for (name, retention) in [
        ("INT", RetentionPolicy::Interest),
        ("WQ", RetentionPolicy::WorkQueue),
    ] {
        let subj = name.to_lowercase();
        stream(
            &live,
            StreamConfig::new(name)
                .subjects([subj.clone()])
                .retention(retention),
        )
        .await;
        live.create_consumer(name, ConsumerConfig::durable("c"))
            .await
            .unwrap();
        for _ in 0..4 {
            publish(&live, &subj, "x").await;
        }
    }
    for _ in 0..3 {
        publish(&live, "age", "old").await;
    }
    live.close().await.unwrap();
    // A session that acknowledges everything, its acks confirmed (in the
    // consumers' journals), killed before the removals could be anything
    // but in memory.
    let live = Store::open(dir, o()).unwrap();
    for name in ["INT", "WQ"] {
        let d = live.fetch(name, "c", 10, NOW).await.unwrap();
        assert_eq!(d.len(), 4);
        for x in &d {
            live.ack_confirmed(&x.ack, AckKind::Ack).await.unwrap();
        }
    }
    let crash = tempfile::tempdir().unwrap();
    copy_dir(dir, crash.path());
    std::fs::remove_file(crash.path().join("LOCK")).unwrap();
    drop(live);
    // Time passes beyond AGE's max_age.
    clock.advance(Duration::from_secs(120));
    let want = {
        let s = Store::open(crash.path(), o()).unwrap();
        let l = s.list_streams().await.unwrap();
        s.close().await.unwrap();
        l
    };
    for info in &want {
        assert_eq!(
            info.state.messages, 0,
            "{}: {:?}",
            info.config.name, info.state
        );
    }
    // Each stream on its own first use, too.
    let s = Store::open(crash.path(), o()).unwrap();
    for name in ["AGE", "INT", "WQ"] {
        assert_eq!(
            s.stream_info(name).await.unwrap().state.messages,
            0,
            "{name}"
        );
    }
    s.close().await.unwrap();
}

/// The catalog journal's length.
fn journal_len(dir: &Path) -> usize {
    std::fs::read(dir.join("catalog.journal")).unwrap().len()
}

/// Whether the catalog journal of `dir` names `stream` past byte `from`
/// (a mark or an entry: the stream was recovered or changed since).
fn journal_names(dir: &Path, from: usize, stream: &str) -> bool {
    let j = std::fs::read(dir.join("catalog.journal")).unwrap();
    let j = &j[from.min(j.len())..];
    let mut needle = vec![u8::try_from(stream.len()).unwrap()];
    needle.extend_from_slice(stream.as_bytes());
    j.windows(needle.len()).any(|w| w == needle)
}

/// Checks invariant 34 (docs/design.md): opening reads no stream's entry;
/// the maintenance thread opens, unnamed, only a stream whose messages
/// may have reached `max_age` (the index's hint).
#[tokio::test]
async fn unnamed_streams_stay_unopened_except_those_whose_max_age_passed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clock = Arc::new(ManualClock::new());
    let o = || clocked(&clock);
    let s = Store::open(dir, o()).unwrap();
    age_stream(&s).await;
    stream(&s, StreamConfig::new("KEEP").subjects(["keep"])).await;
    for i in 0..30 {
        stream(
            &s,
            StreamConfig::new(format!("F{i}")).subjects([format!("f.{i}")]),
        )
        .await;
    }
    for _ in 0..3 {
        publish(&s, "age", "old").await;
        publish(&s, "keep", "kept").await;
    }
    s.close().await.unwrap();
    clock.advance(Duration::from_secs(30));
    let from = journal_len(dir);
    let s = Store::open(dir, o()).unwrap();
    // Within max_age: nothing is opened by the maintenance thread.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(journal_len(dir), from);
    clock.advance(Duration::from_secs(90));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !journal_names(dir, from, "AGE") {
        assert!(
            std::time::Instant::now() < deadline,
            "AGE was not opened to expire"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!journal_names(dir, from, "KEEP"));
    assert!((0..30).all(|i| !journal_names(dir, from, &format!("F{i}"))));
    assert_eq!(s.stream_info("AGE").await.unwrap().state.messages, 0);
    assert_eq!(s.stream_info("KEEP").await.unwrap().state.messages, 3);
    assert!(journal_names(dir, from, "KEEP"));
    s.close().await.unwrap();
}

/// Checks invariant 34 (docs/design.md): a session that uses some streams,
/// deletes one it never named before and folds the catalog at its close
/// keeps every other stream, the ones it never read copied as they were.
#[tokio::test]
async fn a_folded_catalog_keeps_the_streams_a_session_never_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = open(dir);
    for i in 0..300 {
        stream(
            &s,
            StreamConfig::new(format!("S{i}")).subjects([format!("s.{i}")]),
        )
        .await;
        for _ in 0..i % 4 {
            publish(&s, &format!("s.{i}"), "x").await;
        }
    }
    s.close().await.unwrap();
    let before = std::fs::read(dir.join("catalog")).unwrap();
    let s = open(dir);
    // Enough first uses that the journal passes what a close folds.
    for i in 0..200 {
        s.stream_info(&format!("S{i}")).await.unwrap();
    }
    s.delete_stream("S250").await.unwrap();
    s.close().await.unwrap();
    assert_ne!(
        std::fs::read(dir.join("catalog")).unwrap(),
        before,
        "not folded"
    );
    let want = full_recovery_list(dir).await;
    assert_eq!(want.len(), 299);
    assert!(want.iter().all(|i| i.config.name != "S250"));
    let s = Store::open(dir, opts().read_only(true)).unwrap();
    assert_eq!(s.list_streams().await.unwrap(), want);
    assert_eq!(s.stream_info("S299").await.unwrap().state.messages, 3);
    s.close().await.unwrap();
    // Listed from the folded catalog: no stream is recovered (which
    // would mark it) or found only in `streams/` (which would add it).
    let from = journal_len(dir);
    let s = open(dir);
    assert_eq!(s.list_streams().await.unwrap(), want);
    assert_eq!(journal_len(dir), from);
    s.close().await.unwrap();
}

/// A store used by the child of the kill -9 test: random creates,
/// deletes, updates and publishes, each printed once acknowledged.
async fn child(dir: &Path, seed: u64) {
    let s = Store::open(dir, Options::default().durability(Durability::Always)).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let out = std::io::stdout();
    let say = |line: String| {
        use std::io::Write;
        let mut o = out.lock();
        writeln!(o, "EVT {line}").unwrap();
        o.flush().unwrap();
    };
    say("ready".into());
    loop {
        let n = rng.random_range(0..12);
        let name = format!("K{n}");
        match rng.random_range(0..10) {
            0 => {
                say(format!("deleting {name}"));
                if s.delete_stream(&name).await.is_ok() {
                    say(format!("deleted {name}"));
                }
            }
            1 | 2 => {
                say(format!("creating {name}"));
                if s.create_stream(StreamConfig::new(name.clone()).subjects([format!("k{n}")]))
                    .await
                    .is_ok()
                {
                    say(format!("created {name}"));
                }
            }
            3 => {
                if let Ok(info) = s.stream_info(&name).await {
                    let mut cfg = info.config;
                    cfg.max_msgs = Some(rng.random_range(5..50));
                    if s.update_stream(cfg).await.is_ok() {
                        say(format!("updated {name}"));
                    }
                }
            }
            _ => {
                if let Ok(Some(ack)) = s.publish(Message::new(format!("k{n}"), "p")).await {
                    say(format!("published {name} {}", ack.seq));
                }
            }
        }
    }
}

/// Checks invariant 34 (docs/design.md): kill -9 at random moments of
/// creates, deletes, config updates and publishes; after each, every
/// acknowledged create and delete holds, no acknowledged sequence is
/// missing, and what the store lists (read-only and writable) is what a
/// full recovery finds. Trials: `DURABUS_CATALOG_TRIALS` (default 6).
#[test]
fn kill9_at_random_moments_leaves_a_catalog_that_lists_what_recovery_finds() {
    if let Ok(dir) = std::env::var("DURABUS_CATALOG_CHILD") {
        let seed = std::env::var("DURABUS_CATALOG_SEED")
            .unwrap()
            .parse()
            .unwrap();
        common::rt().block_on(child(Path::new(&dir), seed));
        return;
    }
    let trials: u64 = std::env::var("DURABUS_CATALOG_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("DURABUS_CATALOG_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(rand::random),
    );
    // name -> (does it exist: Some(yes or no), None when an operation
    // that was not acknowledged may have changed that; last acknowledged
    // sequence)
    let mut model: std::collections::BTreeMap<String, (Option<bool>, u64)> = Default::default();
    let rt = common::rt();
    for trial in 0..trials {
        let seed: u64 = rng.random();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill9_at_random_moments_leaves_a_catalog_that_lists_what_recovery_finds",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DURABUS_CATALOG_CHILD", dir)
            .env("DURABUS_CATALOG_SEED", seed.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The harness prints the test's name on the same line first.
                if let Some(at) = line.find("EVT ") {
                    if tx.send(line[at + 4..].to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), "ready");
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        for evt in rx.try_iter() {
            let w: Vec<&str> = evt.split(' ').collect();
            if w.len() < 2 {
                continue;
            }
            let m = model.entry(w[1].to_owned()).or_insert((Some(false), 0));
            match w[..] {
                ["creating", _] if m.0 != Some(true) => m.0 = None,
                ["created", _] => {
                    // Create-if-absent: an existing stream keeps its sequences.
                    if m.0 != Some(true) {
                        m.1 = 0;
                    }
                    m.0 = Some(true);
                }
                ["deleting", _] => m.0 = None,
                ["deleted", _] => *m = (Some(false), 0),
                ["published", _, seq] => m.1 = seq.parse().unwrap(),
                _ => {}
            }
        }
        rt.block_on(async {
            let want = full_recovery_list(dir).await;
            let r = Store::open(dir, opts().read_only(true)).unwrap();
            assert_eq!(
                r.list_streams().await.unwrap(),
                want,
                "trial {trial} (read-only)"
            );
            r.close().await.unwrap();
            let s = open(dir);
            let got = s.list_streams().await.unwrap();
            assert_eq!(got, want, "trial {trial}");
            for (name, (exists, last)) in &model {
                let found = got.iter().find(|i| &i.config.name == name);
                match (exists, found) {
                    (Some(true), Some(i)) => assert!(
                        i.state.last_seq >= *last,
                        "trial {trial}: {name} {i:?} lost acknowledged sequence {last}"
                    ),
                    (Some(true), None) => {
                        panic!("trial {trial}: acknowledged stream {name} is gone")
                    }
                    (Some(false), Some(_)) => {
                        panic!("trial {trial}: deleted stream {name} is back")
                    }
                    _ => {}
                }
            }
            for (name, m) in model.iter_mut() {
                if got.iter().any(|i| &i.config.name == name) {
                    m.0 = Some(true);
                } else {
                    *m = (Some(false), 0);
                }
            }
            s.close().await.unwrap();
        });
    }
    // The trials did something.
    assert!(trials == 0 || !model.is_empty());
}
