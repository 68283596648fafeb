//! One owner per data directory (design.md invariant 13), across processes.
//!
//! Checks invariant 13 (docs/design.md).

// A failed setup step is a failed test.
#![allow(clippy::expect_used)]

use durabus::{Error, StreamConfig};
use durabus_testkit::crash::ChildProcess;
use durabus_testkit::{file_url, temp_dir};

const EXE: &str = env!("CARGO_BIN_EXE_crash_publisher");

/// While another process holds the directory, opening it fails with
/// `Locked` naming that process's pid; nothing is opened half-way.
#[tokio::test]
async fn open_of_a_directory_held_by_another_process_is_locked_naming_its_pid() {
    let dir = temp_dir();
    let mut holder = ChildProcess::spawn(EXE.as_ref(), dir.path(), &["hold"]).expect("spawn");
    let pid = holder.ready().await.expect("holder ready");
    assert_eq!(Some(pid), holder.pid());

    let err = durabus::connect(&file_url(dir.path(), "always"))
        .await
        .expect_err("a second process opened a locked directory");
    match &err {
        Error::Locked { pid: got, path } => {
            assert_eq!(*got, pid.to_string(), "{err}");
            let name = dir.path().file_name().expect("temp dir name");
            assert!(
                path.iter().any(|c| c == name),
                "Locked names {path:?}, not the data directory"
            );
        }
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&pid.to_string()),
        "error does not name the pid: {text}"
    );

    holder.kill9().await.expect("kill holder");
}

/// The lock dies with its holder: after a SIGKILL the directory opens and
/// works at once (no stale lock file to clean up).
#[tokio::test]
async fn lock_is_released_when_the_holder_is_killed() {
    let dir = temp_dir();
    let mut holder = ChildProcess::spawn(EXE.as_ref(), dir.path(), &["hold"]).expect("spawn");
    holder.ready().await.expect("holder ready");
    holder.kill9().await.expect("kill holder");

    let bus = durabus::connect(&file_url(dir.path(), "always"))
        .await
        .expect("open after the holder was killed");
    bus.create_stream(StreamConfig::new("S").subjects(["s.>"]))
        .await
        .expect("create stream");
    let ack = bus
        .publish("s.x", "after")
        .await
        .expect("publish")
        .expect("captured");
    assert_eq!(ack.seq, 1);
    bus.close().await.expect("close");
}

/// A holder that closes cleanly releases the lock too.
#[tokio::test]
async fn lock_is_released_when_the_holder_closes() {
    let dir = temp_dir();
    let mut holder = ChildProcess::spawn(EXE.as_ref(), dir.path(), &["hold"]).expect("spawn");
    holder.ready().await.expect("holder ready");
    let status = holder.close_stdin_and_wait().await.expect("holder exits");
    assert!(
        status.success(),
        "holder failed: {}",
        holder.finish_stderr().await
    );
    let bus = durabus::connect(&file_url(dir.path(), "always"))
        .await
        .expect("open after the holder closed");
    bus.close().await.expect("close");
}

/// Refused opens from another process never write the lock file: after
/// several of them it still holds the holder's pid, and when a new holder
/// takes over, `Locked` names the new one, never the exited one.
#[tokio::test]
async fn refused_opens_never_overwrite_the_holders_pid_and_a_new_holder_is_named() {
    let dir = temp_dir();
    let lock = dir.path().join("LOCK");
    let mut first = ChildProcess::spawn(EXE.as_ref(), dir.path(), &["hold"]).expect("spawn");
    let pid = first.ready().await.expect("holder ready");
    for _ in 0..3 {
        match durabus::connect(&file_url(dir.path(), "always")).await {
            Err(Error::Locked { pid: got, .. }) => assert_eq!(got, pid.to_string()),
            other => panic!("expected Error::Locked, got {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(
        std::fs::read_to_string(&lock).expect("read LOCK"),
        pid.to_string()
    );
    first.kill9().await.expect("kill holder");

    let mut second = ChildProcess::spawn(EXE.as_ref(), dir.path(), &["hold"]).expect("spawn");
    let pid2 = second.ready().await.expect("second holder ready");
    assert_ne!(pid, pid2);
    match durabus::connect(&file_url(dir.path(), "always")).await {
        Err(Error::Locked { pid: got, .. }) => assert_eq!(got, pid2.to_string()),
        other => panic!("expected Error::Locked, got {:?}", other.map(|_| ())),
    }
    second.kill9().await.expect("kill second holder");
}
