//! The data directory's lock file and symbolic links: the store never
//! follows a link where it expects its own file (invariant 25), and
//! `Locked` names the holder only while it runs (invariant 13).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::symlink;

use durabus_core::{Backend, Error, Message, StreamConfig};
use durabus_log::{FsStorage, LockOutcome, Options, Storage, Store};

fn opts() -> Options {
    Options::default()
}

/// A `LOCK` that is a symbolic link is refused with `Error::Symlink` naming
/// it, and the file it points to is neither truncated nor written.
///
/// Checks invariant 25 (docs/design.md).
#[test]
fn a_symlinked_lock_file_is_refused_and_its_target_is_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let target = tmp.path().join("precious.txt");
    std::fs::write(&target, b"do not truncate me\n").unwrap();
    symlink(&target, dir.join("LOCK")).unwrap();

    let err = Store::open(&dir, opts()).expect_err("opened through a symlinked LOCK");
    match &err {
        Error::Symlink { path } => assert_eq!(*path, dir.join("LOCK")),
        other => panic!("expected Error::Symlink, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("symbolic link") && text.contains("remove"),
        "{text}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"do not truncate me\n");
    assert!(std::fs::symlink_metadata(dir.join("LOCK"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// A store file replaced by a symbolic link (here a segment) fails the
/// stream's recovery with `Error::Symlink` naming it; the link's target is
/// not changed. Streams are recovered when first used (docs/design.md,
/// "Catalog"), so the store opens and the first operation on the stream
/// fails.
///
/// Checks invariant 25 (docs/design.md).
#[tokio::test]
async fn a_symlinked_store_file_is_refused_and_its_target_is_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Store::open(&dir, opts()).unwrap();
    s.create_stream(StreamConfig::new("S").subjects(["a"]))
        .await
        .unwrap();
    s.publish(Message::new("a", "x")).await.unwrap();
    s.close().await.unwrap();

    let segments = dir.join("streams/S/segments");
    let log = std::fs::read_dir(&segments)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let elsewhere = tmp.path().join("elsewhere.log");
    std::fs::rename(&log, &elsewhere).unwrap();
    let before = std::fs::read(&elsewhere).unwrap();
    symlink(&elsewhere, &log).unwrap();

    let s = Store::open(&dir, opts()).unwrap();
    match s.stream_info("S").await {
        Err(Error::Symlink { path }) => assert_eq!(path, log),
        other => panic!("expected Error::Symlink, got {:?}", other.map(|_| ())),
    }
    // A publish it captures fails the same way (never a silent drop).
    assert!(matches!(
        s.publish(Message::new("a", "y")).await,
        Err(Error::Symlink { .. })
    ));
    s.close().await.unwrap();
    assert_eq!(std::fs::read(&elsewhere).unwrap(), before);
}

/// The pid `Locked` reports comes from the lock file, which the holder
/// writes after it took the lock. When that pid is not a running process
/// (a previous owner's, read before the new one wrote its own), the error
/// says the holder is unknown rather than naming a process that is gone.
///
/// Checks invariant 13 (docs/design.md).
#[test]
fn locked_names_an_unknown_holder_when_the_recorded_pid_is_not_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    // Holds the lock with the exited process's pid in the file.
    let held = FsStorage
        .try_lock(&dir.join("LOCK"), &gone.to_string())
        .unwrap();
    assert!(matches!(held, LockOutcome::Acquired(_)));

    let err = Store::open(dir, opts()).map(|_| ()).unwrap_err();
    match &err {
        Error::Locked { pid, path } => {
            assert_eq!(pid, "unknown");
            assert_eq!(path, dir);
        }
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    assert!(err.to_string().contains("an unknown process"), "{err}");
    assert!(!err.to_string().contains(&gone.to_string()), "{err}");
}

/// Refused opens never write the lock file: after any number of them it
/// still holds the owner's pid, and the error names it.
///
/// Checks invariant 13 (docs/design.md).
#[test]
fn refused_opens_leave_the_holders_pid_in_the_lock_file() {
    let tmp = tempfile::tempdir().unwrap();
    let owner = Store::open(tmp.path(), opts()).unwrap();
    let me = std::process::id().to_string();
    for _ in 0..3 {
        match Store::open(tmp.path(), opts()) {
            Err(Error::Locked { pid, .. }) => assert_eq!(pid, me),
            other => panic!("expected Error::Locked, got {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("LOCK")).unwrap(),
        me
    );
    drop(owner);
}
