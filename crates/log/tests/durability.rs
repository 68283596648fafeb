//! Durability: group commit under `Always`, poison after a failed write or
//! fsync (invariant 5, R5), acked data present after reopen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use durabus_core::{Backend, Error, Message, StreamConfig};
use durabus_log::{Durability, FsStorage, LockOutcome, Options, Storage, StorageFile, Store};

/// Storage that counts fsyncs and can be told to fail writes or fsyncs.
#[derive(Debug, Default)]
struct Faulty {
    syncs: AtomicU64,
    fail_writes: AtomicBool,
    fail_syncs: AtomicBool,
    /// Microseconds each fsync takes at least (a slow disk).
    sync_micros: AtomicU64,
}

#[derive(Debug)]
struct FaultyStorage(Arc<Faulty>);

#[derive(Debug)]
struct FaultyFile(Arc<dyn StorageFile>, Arc<Faulty>);

impl StorageFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        if self.1.fail_writes.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected write failure"));
        }
        self.0.write_all_at(data, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.1.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.1.syncs.fetch_add(1, Ordering::SeqCst);
        let slow = self.1.sync_micros.load(Ordering::SeqCst);
        if slow > 0 {
            std::thread::sleep(std::time::Duration::from_micros(slow));
        }
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Storage for FaultyStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(FaultyFile(FsStorage.open(path)?, self.0.clone())))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(FaultyFile(
            FsStorage.create(path)?,
            self.0.clone(),
        )))
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        FsStorage.exists(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        FsStorage.list_dir(path)
    }
    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        FsStorage.is_dir(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage.create_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FsStorage.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        FsStorage.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage.remove_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        FsStorage.sync_dir(path)
    }
    fn try_lock(&self, path: &Path, pid: &str) -> io::Result<LockOutcome> {
        FsStorage.try_lock(path, pid)
    }
}

fn faulty(dir: &Path, d: Durability) -> (Store, Arc<Faulty>) {
    let f = Arc::new(Faulty::default());
    let s = Store::open_with_storage(
        dir,
        Arc::new(FaultyStorage(f.clone())),
        Options::default().durability(d),
    )
    .unwrap();
    (s, f)
}

/// 64 tasks publish `per` messages each, awaiting every ack, all starting
/// together; returns the fsyncs they took.
async fn publish_from_64_tasks(s: &Store, f: &Faulty, per: u64) -> u64 {
    let start = Arc::new(tokio::sync::Barrier::new(64));
    let before = f.syncs.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for p in 0..64 {
        let (s, start) = (s.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for i in 0..per {
                s.publish(Message::new("a", format!("{p}-{i}")))
                    .await
                    .unwrap()
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    f.syncs.load(Ordering::SeqCst) - before
}

/// Checks invariant 4 (docs/design.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_share_fsyncs_under_always() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, f) = faulty(tmp.path(), Durability::Always);
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    let per = 20;
    let syncs = publish_from_64_tasks(&s, &f, per).await;
    let total = 64 * per;
    assert!(
        syncs < total / 2,
        "{syncs} fsyncs for {total} publishes: no group commit"
    );
    assert_eq!(s.stream_info("S").await.unwrap().state.messages, total);
    s.close().await.unwrap();
    let s = open(tmp.path());
    assert_eq!(s.stream_info("S").await.unwrap().state.messages, total);
}

/// Without the gather step, the publishers an fsync wakes miss the next one
/// (it starts at once with those already waiting): the group splits into two
/// halves taking turns, 32 publishes per fsync. With it a group is whole
/// (about 64); the bound, 40, leaves room for a straggler. On a loaded
/// 2-core machine a run can still split a group (37-39 per fsync seen, 43
/// in a full CI run), so the test takes the best of three runs: without
/// the gather no run gets above 32.
///
/// Checks invariant 4 (docs/design.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_woken_by_an_fsync_join_the_next_one_whole() {
    let per = 30;
    let total = 64 * per;
    let mut fewest = u64::MAX;
    for _ in 0..3 {
        let tmp = tempfile::tempdir().unwrap();
        let (s, f) = faulty(tmp.path(), Durability::Always);
        f.sync_micros.store(2_000, Ordering::SeqCst);
        stream(&s, StreamConfig::new("S").subjects(["a"])).await;
        let syncs = publish_from_64_tasks(&s, &f, per).await;
        assert_eq!(s.stream_info("S").await.unwrap().state.messages, total);
        fewest = fewest.min(syncs);
        if syncs * 40 <= total {
            break;
        }
    }
    assert!(
        fewest * 40 <= total,
        "best of 3 runs: {fewest} fsyncs for {total} publishes by 64 publishers: {} per fsync, not 40 or more",
        total / fewest
    );
}

/// Checks invariant 3 (docs/design.md).
#[tokio::test]
async fn each_always_ack_follows_an_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, f) = faulty(tmp.path(), Durability::Always);
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    for i in 0..5 {
        let before = f.syncs.load(Ordering::SeqCst);
        publish(&s, "a", format!("{i}")).await;
        assert!(f.syncs.load(Ordering::SeqCst) > before, "ack without fsync");
    }
}

/// Checks invariant 5 (docs/design.md).
#[tokio::test]
async fn failed_fsync_poisons_the_stream_until_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, f) = faulty(tmp.path(), Durability::Always);
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    publish(&s, "a", "ok").await;
    f.fail_syncs.store(true, Ordering::SeqCst);
    let err = s.publish(Message::new("a", "lost")).await.unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    f.fail_syncs.store(false, Ordering::SeqCst);
    let err = s.publish(Message::new("a", "after")).await.unwrap_err();
    assert!(
        matches!(err, Error::Poisoned { ref stream, .. } if stream == "S"),
        "{err}"
    );
    let _ = s.close().await;
    let s = open(tmp.path());
    let m = s.get_message("S", 1).await.unwrap();
    assert_eq!(&m.payload[..], b"ok");
    assert_eq!(
        publish(&s, "a", "again").await,
        s.stream_info("S").await.unwrap().state.last_seq
    );
}

/// Checks invariant 5 (docs/design.md).
#[tokio::test]
async fn failed_write_poisons_and_nothing_after_is_acked() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, f) = faulty(tmp.path(), Durability::None);
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    publish(&s, "a", "ok").await;
    f.fail_writes.store(true, Ordering::SeqCst);
    assert!(matches!(
        s.publish(Message::new("a", "x")).await,
        Err(Error::Poisoned { .. })
    ));
    f.fail_writes.store(false, Ordering::SeqCst);
    let r = s
        .publish_batch(vec![Message::new("a", "y"), Message::new("a", "z")])
        .await
        .unwrap();
    assert!(r.iter().all(|r| matches!(r, Err(Error::Poisoned { .. }))));
    assert!(matches!(
        s.delete_message("S", 1).await,
        Err(Error::Poisoned { .. })
    ));
    drop(s);
    let s = open(tmp.path());
    let st = s.stream_info("S").await.unwrap().state;
    assert_eq!((st.messages, st.last_seq), (1, 1));
}

#[tokio::test]
async fn periodic_durability_syncs_in_the_background() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, f) = faulty(
        tmp.path(),
        Durability::Periodic(std::time::Duration::from_millis(20)),
    );
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    let before = f.syncs.load(Ordering::SeqCst);
    publish(&s, "a", "x").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(f.syncs.load(Ordering::SeqCst) > before);
}

#[tokio::test]
async fn acked_publishes_survive_drop_without_close() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(tmp.path());
        stream(&s, StreamConfig::new("S").subjects(["a"])).await;
        for i in 0..100 {
            publish(&s, "a", format!("{i}")).await;
        }
    }
    let s = open(tmp.path());
    assert_eq!(s.stream_info("S").await.unwrap().state.messages, 100);
}
