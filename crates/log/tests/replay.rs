//! Ordered replay: start positions, gaps, live tail, cancel-safety.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use durabus_core::{
    Backend, Error, Message, PurgeRequest, Replay, ReplayOptions, ReplayStart, StreamConfig,
};
use durabus_log::Store;

async fn take(r: &mut Replay, n: usize) -> Vec<u64> {
    let mut v = Vec::new();
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(2), r.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        v.push(m.seq);
    }
    v
}

async fn drain(r: &mut Replay) -> Vec<u64> {
    let mut v = Vec::new();
    while let Some(m) = tokio::time::timeout(Duration::from_secs(2), r.next())
        .await
        .unwrap()
    {
        v.push(m.unwrap().seq);
    }
    v
}

fn stores(dir: &std::path::Path) -> Vec<(&'static str, Store)> {
    vec![
        ("file", open_with(dir, opts().segment_size(1024))),
        ("memory", Store::memory(opts().segment_size(1024)).unwrap()),
    ]
}

#[tokio::test]
async fn replay_from_sequence_with_gaps_then_live() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in stores(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
        for i in 1..=100u64 {
            publish(
                &s,
                if i % 10 == 0 { "a.ten" } else { "a.x" },
                format!("m{i}"),
            )
            .await;
        }
        s.delete_message("S", 5).await.unwrap();
        s.delete_message("S", 50).await.unwrap();
        s.purge_stream(
            "S",
            PurgeRequest {
                up_to_seq: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(matches!(
            s.replay("S", ReplayOptions::from_seq(0)).await,
            Err(Error::InvalidArgument { .. })
        ));
        let mut r = s.replay("S", ReplayOptions::from_seq(1)).await.unwrap();
        let got = take(&mut r, 96).await;
        let want: Vec<u64> = (3..=100).filter(|&x| x != 5 && x != 50).collect();
        assert_eq!(got, want, "{kind}");
        // Caught up: continues live.
        let p = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            publish(&p, "a.x", "live").await;
        });
        let m = tokio::time::timeout(Duration::from_secs(2), r.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((m.seq, &m.payload[..]), (101, &b"live"[..]), "{kind}");
        // Filtered, bounded.
        let mut f = s
            .replay(
                "S",
                ReplayOptions::from_seq(1).filter("a.ten").stop_at_end(),
            )
            .await
            .unwrap();
        assert_eq!(
            drain(&mut f).await,
            (1..=10)
                .map(|i| i * 10)
                .filter(|&x| x != 50)
                .collect::<Vec<_>>(),
            "{kind}"
        );
        let mut mid = s
            .replay("S", ReplayOptions::from_seq(60).stop_at_end())
            .await
            .unwrap();
        assert_eq!(
            drain(&mut mid).await,
            (60..=101).collect::<Vec<_>>(),
            "{kind}"
        );
        s.close().await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(2), r.next())
                .await
                .unwrap()
                .is_none(),
            "{kind}: ends on close"
        );
    }
}

#[tokio::test]
async fn replay_from_time_and_new() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in stores(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a"])).await;
        for i in 0..30 {
            publish(&s, "a", format!("{i}")).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = SystemTime::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        for i in 30..40 {
            publish(&s, "a", format!("{i}")).await;
        }
        let mut r = s
            .replay("S", ReplayOptions::from_time(t).stop_at_end())
            .await
            .unwrap();
        assert_eq!(drain(&mut r).await, (31..=40).collect::<Vec<_>>(), "{kind}");
        let mut all = s
            .replay(
                "S",
                ReplayOptions::from_time(SystemTime::UNIX_EPOCH).stop_at_end(),
            )
            .await
            .unwrap();
        assert_eq!(drain(&mut all).await.len(), 40);
        let opts = ReplayOptions {
            start: ReplayStart::New,
            filter: None,
            stop_at_end: false,
        };
        let mut new = s.replay("S", opts).await.unwrap();
        publish(&s, "a", "after").await;
        assert_eq!(take(&mut new, 1).await, vec![41], "{kind}");
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn replay_next_is_cancel_safe() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in stores(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a"])).await;
        publish(&s, "a", "1").await;
        let mut r = s.replay("S", ReplayOptions::from_seq(1)).await.unwrap();
        assert_eq!(take(&mut r, 1).await, vec![1]);
        // Times out while waiting live: the dropped future must lose nothing.
        for _ in 0..3 {
            assert!(tokio::time::timeout(Duration::from_millis(10), r.next())
                .await
                .is_err());
        }
        publish(&s, "a", "2").await;
        publish(&s, "a", "3").await;
        assert_eq!(take(&mut r, 2).await, vec![2, 3], "{kind}");
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn replay_skips_ahead_when_retention_removes_its_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open_with(tmp.path(), opts().segment_size(512));
    stream(&s, StreamConfig::new("S").subjects(["a"]).max_msgs(20u64)).await;
    for i in 0..20 {
        publish(&s, "a", format!("{i:04}")).await;
    }
    let mut r = s.replay("S", ReplayOptions::from_seq(1)).await.unwrap();
    assert_eq!(take(&mut r, 2).await, vec![1, 2]);
    for i in 0..100 {
        publish(&s, "a", format!("{i:04}")).await;
    }
    // Everything before 101 is gone; the replay continues at the new first
    // (messages it had already buffered may come first, all in order).
    let mut got = Vec::new();
    while got.last() != Some(&120) {
        got.extend(take(&mut r, 1).await);
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    assert!(got.contains(&101) && got.len() <= 118, "{got:?}");
}

#[tokio::test]
async fn replay_ends_when_stream_is_deleted() {
    let s = Store::memory(opts()).unwrap();
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    let mut r = s.replay("S", ReplayOptions::from_seq(1)).await.unwrap();
    let p = s.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        p.delete_stream("S").await.unwrap();
    });
    assert!(tokio::time::timeout(Duration::from_secs(2), r.next())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn replay_returns_payloads_intact_across_big_messages() {
    let s = Store::memory(opts().segment_size(1 << 20)).unwrap();
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    let big = vec![7u8; 600 * 1024];
    publish(&s, "a", "small").await;
    publish(&s, "a", big.clone()).await;
    s.publish(Message::new("a", "h").with_header("K", "v"))
        .await
        .unwrap();
    let mut r = s
        .replay("S", ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let a = r.next().await.unwrap().unwrap();
    let b = r.next().await.unwrap().unwrap();
    let c = r.next().await.unwrap().unwrap();
    assert_eq!(&a.payload[..], b"small");
    assert_eq!(b.payload.len(), big.len());
    assert_eq!(c.headers.get("K"), Some("v"));
    assert!(r.next().await.is_none());
}

/// A storage whose files opened while it is armed stall every read until
/// released: the handles a replay opens for itself (invariant 11).
#[derive(Debug, Default)]
struct StallingReads {
    armed: std::sync::atomic::AtomicBool,
    /// Reads waiting at the gate.
    waiting: std::sync::atomic::AtomicU64,
    /// `true` once released.
    gate: (std::sync::Mutex<bool>, std::sync::Condvar),
}

impl StallingReads {
    fn release(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

#[derive(Debug)]
struct Stalling(std::sync::Arc<StallingReads>);

#[derive(Debug)]
struct StallingFile(
    std::sync::Arc<dyn durabus_log::StorageFile>,
    std::sync::Arc<StallingReads>,
);

impl durabus_log::StorageFile for StallingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        self.1.waiting.fetch_add(1, Ordering::SeqCst);
        let (open, cv) = &self.1.gate;
        drop(cv.wait_while(open.lock().unwrap(), |open| !*open).unwrap());
        self.1.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_all_at(data, offset)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
}

impl durabus_log::Storage for Stalling {
    fn open(
        &self,
        path: &std::path::Path,
    ) -> std::io::Result<std::sync::Arc<dyn durabus_log::StorageFile>> {
        let file = durabus_log::FsStorage.open(path)?;
        if self.0.armed.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(std::sync::Arc::new(StallingFile(file, self.0.clone())));
        }
        Ok(file)
    }
    fn create(
        &self,
        path: &std::path::Path,
    ) -> std::io::Result<std::sync::Arc<dyn durabus_log::StorageFile>> {
        durabus_log::FsStorage.create(path)
    }
    fn exists(&self, path: &std::path::Path) -> std::io::Result<bool> {
        durabus_log::FsStorage.exists(path)
    }
    fn list_dir(&self, path: &std::path::Path) -> std::io::Result<Vec<String>> {
        durabus_log::FsStorage.list_dir(path)
    }
    fn is_dir(&self, path: &std::path::Path) -> std::io::Result<bool> {
        durabus_log::FsStorage.is_dir(path)
    }
    fn create_dir_all(&self, path: &std::path::Path) -> std::io::Result<()> {
        durabus_log::FsStorage.create_dir_all(path)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        durabus_log::FsStorage.rename(from, to)
    }
    fn remove_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        durabus_log::FsStorage.remove_file(path)
    }
    fn remove_dir_all(&self, path: &std::path::Path) -> std::io::Result<()> {
        durabus_log::FsStorage.remove_dir_all(path)
    }
    fn sync_dir(&self, path: &std::path::Path) -> std::io::Result<()> {
        durabus_log::FsStorage.sync_dir(path)
    }
    fn try_lock(
        &self,
        path: &std::path::Path,
        pid: &str,
    ) -> std::io::Result<durabus_log::LockOutcome> {
        durabus_log::FsStorage.try_lock(path, pid)
    }
}

/// Invariant 11: a replay reads segment files through its own handles,
/// outside the stream lock. With every read of the replay's handle stalled
/// (a slow disk), publishes, stream info and a second replay's planning
/// still complete; once the disk answers, the replay goes on in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reading_a_segment_never_blocks_a_publish() {
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().unwrap();
    let reads = std::sync::Arc::new(StallingReads::default());
    let s = Store::open_with_storage(
        tmp.path(),
        std::sync::Arc::new(Stalling(reads.clone())),
        opts(),
    )
    .unwrap();
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    for i in 1..=10 {
        publish(&s, "a", format!("m{i}")).await;
    }
    reads.armed.store(true, Ordering::SeqCst);

    // The replay runs on a thread of its own: its read blocks that thread.
    let replaying = s.clone();
    let reader = std::thread::spawn(move || {
        rt().block_on(async move {
            let mut r = replaying
                .replay("S", ReplayOptions::from_seq(1).stop_at_end())
                .await
                .unwrap();
            drain(&mut r).await
        })
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reads.waiting.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replay never read its segment"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // A writer that needed the lock the reader holds would wait forever.
    let seq = tokio::time::timeout(Duration::from_secs(30), publish(&s, "a", "while reading"))
        .await
        .expect("a publish waited for a replay's disk read");
    assert_eq!(seq, 11);
    let info = tokio::time::timeout(Duration::from_secs(30), s.stream_info("S"))
        .await
        .expect("stream info waited for a replay's disk read")
        .unwrap();
    assert_eq!(info.state.last_seq, 11);
    assert!(
        reads.waiting.load(Ordering::SeqCst) >= 1,
        "the read is still stalled"
    );

    reads.release();
    let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert_eq!(got, (1..=10).collect::<Vec<u64>>());
}
