//! Read-only stores (docs/design.md, "Read-only stores") and the files
//! beside the segments that can be damaged (config.json, consumer files,
//! stray entries): each on a real directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::readonly::ReadOnlyDir;
use common::{open, open_with, opts, publish, stream};
use durabus_core::{Backend, ConsumerConfig, Error, Message, ReplayOptions, StreamConfig};
use durabus_log::{Durability, FsStorage, LockOutcome, Options, Storage, StorageFile, Store};

const NOW: Duration = Duration::from_millis(1);

fn ro() -> Options {
    opts().read_only(true)
}

/// A store with stream S (60 messages over small segments), a durable
/// consumer that took 10, and stream T.
async fn fill(dir: &Path) {
    let s = open_with(dir, opts().segment_size(1024));
    stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
    stream(&s, StreamConfig::new("T").subjects(["t"])).await;
    for i in 1..=60u64 {
        publish(&s, &format!("a.{}", i % 3), format!("payload-{i}")).await;
    }
    publish(&s, "t", "t1").await;
    s.create_consumer("S", ConsumerConfig::durable("c"))
        .await
        .unwrap();
    s.fetch("S", "c", 10, NOW).await.unwrap();
    s.close().await.unwrap();
}

async fn replay_all(s: &Store, name: &str) -> Vec<u64> {
    let mut r = s
        .replay(name, ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(m) = r.next().await {
        out.push(m.unwrap().seq);
    }
    out
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn assert_read_only(e: Error) {
    assert!(matches!(e, Error::ReadOnly { .. }), "{e}");
    assert!(e.to_string().contains("read-only"), "{e}");
}

/// Checks invariant 23 (docs/design.md).
#[tokio::test]
async fn a_read_only_store_reads_everything_on_a_read_only_file_system_and_refuses_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    fill(&dir).await;
    let _ro = ReadOnlyDir::new(&dir);
    // A writable open cannot work here (it writes LOCK).
    assert!(Store::open(&dir, opts()).is_err());
    let s = Store::open(&dir, ro()).unwrap();
    assert!(s.is_read_only());
    let info = s.stream_info("S").await.unwrap();
    assert_eq!((info.state.messages, info.state.last_seq), (60, 60));
    assert_eq!(replay_all(&s, "S").await, (1..=60).collect::<Vec<_>>());
    assert_eq!(
        &s.get_message("S", 7).await.unwrap().payload[..],
        b"payload-7"
    );
    assert_eq!(s.list_streams().await.unwrap().len(), 2);
    let c = s.consumer_info("S", "c").await.unwrap();
    assert_eq!(c.num_ack_pending, 10);
    // Every write is refused with a typed error saying why.
    assert_read_only(s.publish(Message::new("a.1", "x")).await.unwrap_err());
    assert_read_only(
        s.create_stream(StreamConfig::new("U").subjects(["u"]))
            .await
            .unwrap_err(),
    );
    assert_read_only(s.delete_message("S", 3).await.unwrap_err());
    assert_read_only(s.fetch("S", "c", 1, NOW).await.unwrap_err());
    assert_read_only(
        s.create_consumer("S", ConsumerConfig::durable("d"))
            .await
            .unwrap_err(),
    );
    assert_read_only(s.delete_stream("T").await.unwrap_err());
    // A subject no stream captures still reaches live subscribers.
    assert_eq!(s.publish(Message::new("free", "x")).await.unwrap(), None);
    s.close().await.unwrap();
    // The offline checks read it too.
    let mut n = 0;
    durabus_log::dump(&dir, None, &mut |_| n += 1).unwrap();
    assert!(n >= 61);
    assert!(durabus_log::check_files(&dir, "S").unwrap().is_empty());
    assert!(durabus_log::check_store(&dir).unwrap().is_empty());
}

/// Checks invariant 23 (docs/design.md).
#[tokio::test]
async fn a_read_only_open_changes_no_byte_and_takes_no_lock_even_with_repairs_due() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fill(dir).await;
    // Repairs a writable open would make: a torn tail, missing indexes and
    // checkpoint, a leftover temp file, an interrupted create.
    let segs = common::segments(dir, "S");
    let last = segs.last().unwrap();
    let mut b = std::fs::read(last).unwrap();
    b.extend_from_slice(&[7, 0, 0, 0, 1, 2]);
    std::fs::write(last, &b).unwrap();
    for e in std::fs::read_dir(dir.join("streams/S/segments")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "idx") {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::remove_file(dir.join("streams/S/checkpoint")).unwrap();
    std::fs::write(dir.join("streams/S/consumers/c.tmp"), b"half").unwrap();
    std::fs::create_dir_all(dir.join("streams/.creating-X")).unwrap();
    std::fs::remove_file(dir.join("LOCK")).unwrap();
    let before = files(dir);
    let s = Store::open(dir, ro()).unwrap();
    assert_eq!(replay_all(&s, "S").await.len(), 60);
    let report = s.recovery_report();
    assert!(report.truncated.is_empty());
    assert_eq!(report.torn_kept.len(), 1, "{report:?}");
    assert_eq!(report.torn_kept[0].2, 6);
    s.close().await.unwrap();
    drop(s);
    assert_eq!(files(dir), before, "a read-only open changed files");
    assert!(!dir.join("LOCK").exists());
    // A writable open then repairs as always.
    let s = open(dir);
    assert_eq!(s.recovery_report().truncated.len(), 1);
    assert_eq!(replay_all(&s, "S").await.len(), 60);
    s.close().await.unwrap();
}

/// Checks invariant 23 (docs/design.md).
#[tokio::test]
async fn a_read_only_open_beside_a_live_owner_sees_what_was_stored_when_it_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let owner = open_with(dir, opts().durability(Durability::Always));
    stream(&owner, StreamConfig::new("S").subjects(["a.*"])).await;
    for i in 0..5 {
        publish(&owner, "a.x", format!("m{i}")).await;
    }
    let reader = Store::open(dir, ro()).unwrap();
    assert_eq!(replay_all(&reader, "S").await, [1, 2, 3, 4, 5]);
    // The owner keeps writing; the reader's view stays as it opened.
    publish(&owner, "a.x", "m5").await;
    assert_eq!(reader.stream_info("S").await.unwrap().state.last_seq, 5);
    reader.close().await.unwrap();
    // The owner was never disturbed, and still holds the lock.
    assert!(matches!(
        Store::open(dir, opts()),
        Err(Error::Locked { .. })
    ));
    publish(&owner, "a.x", "m6").await;
    owner.close().await.unwrap();
    let s = open(dir);
    assert_eq!(s.stream_info("S").await.unwrap().state.last_seq, 7);
    s.close().await.unwrap();
}

/// The file system, with checkpoint writes failing as on a full disk.
#[derive(Debug)]
struct NoRoomForCheckpoints(FsStorage);

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

impl Storage for NoRoomForCheckpoints {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.0.open(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.0.open_read(path)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        if path.file_name().is_some_and(|n| n == "checkpoint.tmp") {
            return Err(enospc());
        }
        self.0.create(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.0.exists(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.0.list_dir(path)
    }
    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        self.0.is_dir(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.0.create_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.0.remove_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.0.sync_dir(path)
    }
    fn try_lock(&self, path: &Path, pid: &str) -> io::Result<LockOutcome> {
        self.0.try_lock(path, pid)
    }
}

/// Checks invariant 3 (docs/design.md).
#[tokio::test]
async fn a_checkpoint_that_cannot_be_written_at_close_is_a_warning_when_the_data_is_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = Arc::new(NoRoomForCheckpoints(FsStorage::new()));
    let s = Store::open_with_storage(tmp.path(), storage, opts().durability(Durability::Always))
        .unwrap();
    stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
    publish(&s, "a.x", "acked").await;
    // The message was fsynced before its ack: the close succeeds.
    s.close().await.unwrap();
    assert!(!tmp.path().join("streams/S/checkpoint").exists());
    let s = open(tmp.path());
    assert_eq!(&s.get_message("S", 1).await.unwrap().payload[..], b"acked");
    s.close().await.unwrap();
}

/// Checks invariant 24 (docs/design.md).
#[tokio::test]
async fn a_stream_with_a_broken_config_is_reported_and_the_others_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fill(dir).await;
    let cfg = dir.join("streams/T/config.json");
    let good = std::fs::read(&cfg).unwrap();
    let damages: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("truncated", Some(good[..good.len() / 2].to_vec())),
        ("garbled", Some(b"{\"config\": 17}".to_vec())),
        ("deleted", None),
    ];
    for (round, (what, bytes)) in damages.into_iter().enumerate() {
        match &bytes {
            Some(b) => std::fs::write(&cfg, b).unwrap(),
            None => std::fs::remove_file(&cfg).unwrap(),
        }
        let before = files(&dir.join("streams/T"));
        let s = open(dir);
        // Damage done by hand to a stream that closed cleanly is found when
        // the stream is recovered, on its first use (docs/design.md,
        // "Catalog"): here a publish it would capture.
        assert_eq!(s.publish(Message::new("t", "x")).await.unwrap(), None);
        // The other stream works.
        assert_eq!(
            s.stream_info("S").await.unwrap().state.messages,
            60 + round as u64,
            "{what}"
        );
        publish(&s, "a.1", "more").await;
        // The bad one is reported by name, naming its config.
        let u = s.unavailable();
        assert_eq!(u.len(), 1, "{what}: {u:?}");
        assert_eq!(
            (u[0].stream.as_str(), u[0].consumer.as_deref()),
            ("T", None)
        );
        assert!(u[0].reason.contains("config.json"), "{what}: {u:?}");
        // `t` is captured by no open stream: nothing is stored for T.
        assert_eq!(s.publish(Message::new("t", "x")).await.unwrap(), None);
        assert!(matches!(
            s.stream_info("T").await.unwrap_err(),
            Error::StreamUnavailable { name, .. } if name == "T"
        ));
        assert!(matches!(
            s.create_stream(StreamConfig::new("T").subjects(["t"]))
                .await
                .unwrap_err(),
            Error::StreamUnavailable { .. }
        ));
        let names: Vec<String> = s
            .list_streams()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.config.name)
            .collect();
        assert_eq!(names, ["S"], "{what}");
        s.close().await.unwrap();
        // Nothing of T was changed, and verify's check reports it as fatal.
        assert_eq!(files(&dir.join("streams/T")), before, "{what}");
        let problems = durabus_log::check_files(dir, "T").unwrap();
        assert!(
            problems.iter().any(|p| p.fatal && p.path == cfg),
            "{what}: {problems:?}"
        );
        std::fs::write(&cfg, &good).unwrap();
    }
    // Restored, it opens as before.
    let s = open(dir);
    assert!(s.unavailable().is_empty());
    assert_eq!(s.stream_info("T").await.unwrap().state.messages, 1);
    s.close().await.unwrap();
}

/// Checks invariant 24 (docs/design.md).
#[tokio::test]
async fn an_empty_stream_directory_is_unavailable_and_a_stray_entry_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fill(dir).await;
    std::fs::create_dir(dir.join("streams/bad")).unwrap();
    std::fs::create_dir(dir.join("streams/bad.name")).unwrap();
    std::fs::write(dir.join("streams/notes.txt"), b"hello").unwrap();
    let s = open(dir);
    let u = s.unavailable();
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].stream, "bad");
    assert_eq!(s.list_streams().await.unwrap().len(), 2);
    // Deleting the unavailable stream removes its directory.
    s.delete_stream("bad").await.unwrap();
    assert!(!dir.join("streams/bad").exists());
    assert!(s.unavailable().is_empty());
    s.close().await.unwrap();
    // Stray entries are left alone, and reported as warnings.
    assert!(dir.join("streams/bad.name").is_dir());
    let problems = durabus_log::check_store(dir).unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|p| !p.fatal));
}

/// Checks invariant 24 (docs/design.md).
#[tokio::test]
async fn a_garbled_format_marker_is_reported_by_check_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fill(dir).await;
    std::fs::write(dir.join("durabus.json"), b"{\"form").unwrap();
    assert!(matches!(
        Store::open(dir, opts()),
        Err(Error::Corrupt { .. })
    ));
    let problems = durabus_log::check_store(dir).unwrap();
    assert!(problems.iter().any(|p| p.fatal), "{problems:?}");
}

/// Sets or clears the immutable attribute; false when the file system or
/// the privileges do not allow it.
fn chattr(path: &Path, on: bool) -> bool {
    std::process::Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

/// Checks invariant 19 (docs/design.md).
#[tokio::test]
async fn an_immutable_consumer_file_makes_only_that_consumer_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fill(dir).await;
    {
        let s = open(dir);
        s.create_consumer("S", ConsumerConfig::durable("d"))
            .await
            .unwrap();
        s.close().await.unwrap();
    }
    let file = dir.join("streams/S/consumers/c");
    let immutable = chattr(&file, true);
    if !immutable {
        // No chattr here: a file its owner cannot write (not for root).
        let mut p = std::fs::metadata(&file).unwrap().permissions();
        p.set_readonly(true);
        std::fs::set_permissions(&file, p).unwrap();
    }
    struct Undo<'a>(&'a Path, bool);
    impl Drop for Undo<'_> {
        fn drop(&mut self) {
            if self.1 {
                chattr(self.0, false);
            }
        }
    }
    let _undo = Undo(&file, immutable);
    // The test must not pass vacuously: the file really refuses writes.
    assert!(
        std::fs::OpenOptions::new().write(true).open(&file).is_err(),
        "{} is still writable",
        file.display()
    );
    let before = std::fs::read(&file).unwrap();
    let s = open(dir);
    // Found when the stream is recovered, on its first use (docs/design.md,
    // "Catalog").
    s.stream_info("S").await.unwrap();
    let u = s.unavailable();
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].consumer.as_deref(), Some("c"));
    assert!(matches!(
        s.fetch("S", "c", 1, NOW).await.unwrap_err(),
        Error::ConsumerUnavailable { .. }
    ));
    assert_eq!(s.fetch("S", "d", 5, NOW).await.unwrap().len(), 5);
    // The close writes d's state and succeeds.
    s.close().await.unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // Read-only, the same file loads: nothing is written anyway.
    let s = Store::open(dir, ro()).unwrap();
    s.stream_info("S").await.unwrap();
    assert!(s.unavailable().is_empty());
    assert_eq!(s.consumer_info("S", "c").await.unwrap().num_ack_pending, 10);
    s.close().await.unwrap();
}
