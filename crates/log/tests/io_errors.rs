//! R5: I/O errors. The workload of `common/workload.rs` runs on storage that
//! fails the Nth write (file writes, truncations, creations, renames,
//! removals) or the Nth fsync (file or directory), once or from then on,
//! for N = 1, 2, ... until the workload completes. With durability
//! `always`:
//!
//! - a failed operation is never acknowledged, and nothing acknowledged is
//!   lost when the store is reopened on the healed disk;
//! - after a publish failed, the stream refuses publishes with
//!   `Error::Poisoned` naming the first failure, even once the disk works
//!   again, until the store is reopened (invariant 5).
//!
//! Checks invariant 5 (docs/design.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::faults::{Faults, Kind};
use common::power_loss::PowerLoss;
use common::workload::{check, options, workload, Acked, PUBLISHES, STREAM};
use durabus_core::{Backend, Error, Message};
use durabus_log::{Durability, Store};

async fn fail_at_every_operation(kind: Kind, persistent: bool) {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let mut n = 1;
    loop {
        let shim = PowerLoss::new(&data, u64::MAX);
        let faults = Faults::new(Arc::new(shim.clone()), kind, n, persistent);
        let what = format!("{kind:?} failing at #{n}, persistent {persistent}");
        let acked = match Store::open_with_storage(
            &data,
            Arc::new(faults.clone()),
            options(Durability::Always),
        ) {
            Ok(store) => {
                let acked = workload(&store).await;
                if acked.stream && acked.publishes < PUBLISHES && faults.failures() > 0 {
                    // A publish failed: the stream stays poisoned, the disk
                    // healed or not.
                    faults.heal();
                    match store.publish(Message::new("s.0", "probe")).await {
                        Err(Error::Poisoned { stream, cause }) => {
                            assert_eq!(stream, STREAM);
                            assert!(cause.contains("injected"), "{what}: cause {cause:?}");
                        }
                        other => panic!(
                            "{what}: after a failed publish, a publish gave {other:?}, not Poisoned"
                        ),
                    }
                }
                drop(store);
                acked
            }
            Err(e) => {
                assert!(
                    e.to_string().contains("injected"),
                    "{what}: open failed without naming the failure: {e}"
                );
                Acked::default()
            }
        };
        if acked.completed && faults.failures() == 0 {
            assert!(n > 20, "the workload took only {n} operations of {kind:?}");
            return;
        }
        let dir = root.path().join(format!("image-{n}"));
        shim.live_image(&dir);
        check(
            &dir,
            Durability::Always,
            &acked,
            &format!("{what}, acked {acked:?}"),
        )
        .await;
        std::fs::remove_dir_all(&dir).unwrap();
        n += 1;
    }
}

#[tokio::test]
async fn a_write_failing_once_is_never_acknowledged_and_poisons_the_stream() {
    fail_at_every_operation(Kind::Writes, false).await;
}

#[tokio::test]
async fn writes_failing_for_good_lose_nothing_acknowledged() {
    fail_at_every_operation(Kind::Writes, true).await;
}

#[tokio::test]
async fn an_fsync_failing_once_is_never_acknowledged_and_poisons_the_stream() {
    fail_at_every_operation(Kind::Syncs, false).await;
}

#[tokio::test]
async fn fsyncs_failing_for_good_lose_nothing_acknowledged() {
    fail_at_every_operation(Kind::Syncs, true).await;
}

/// Interest retention removes a message no consumer's filter matches with a
/// delete record. When writing that record fails, the stream is poisoned and
/// the message stays: the removal is not done (as for `delete_message`).
#[tokio::test]
async fn a_failed_retention_delete_record_poisons_and_keeps_the_message() {
    use durabus_core::{ConsumerConfig, RetentionPolicy, StreamConfig};
    use durabus_log::FsStorage;

    let mut hit = false;
    for at in 1..200 {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new(Arc::new(FsStorage::new()), Kind::Writes, at, false);
        let Ok(store) = Store::open_with_storage(
            dir.path(),
            Arc::new(faults.clone()),
            options(Durability::None),
        ) else {
            continue;
        };
        let cfg = StreamConfig::new("S")
            .subjects(["a.>", "b.>"])
            .retention(RetentionPolicy::Interest);
        if store.create_stream(cfg).await.is_err()
            || store
                .create_consumer("S", ConsumerConfig::durable("c").filter_subject("a.>"))
                .await
                .is_err()
        {
            continue;
        }
        let Ok(Some(ack)) = store.publish(Message::new("b.1", "unmatched")).await else {
            continue;
        };
        if faults.failures() == 0 {
            // The fault lies past the scenario: every write was tried.
            assert!(hit, "no write of the scenario was the delete record");
            return;
        }
        // The message was written; the next write, its delete record, failed.
        hit = true;
        match store.publish(Message::new("a.1", "after")).await {
            Err(Error::Poisoned { stream, cause }) => {
                assert_eq!(stream, "S");
                assert!(cause.contains("injected"), "cause {cause:?}");
            }
            other => panic!("failing at #{at}: a publish after it gave {other:?}"),
        }
        let kept = store.get_message("S", ack.seq).await;
        assert!(
            kept.is_ok(),
            "failing at #{at}: the removal whose record failed was done: {kept:?}"
        );
    }
    panic!("the scenario never completed within 200 writes");
}

/// A full disk makes `ack_confirmed` fail, under every durability: its ack
/// is not recorded, so it must not look confirmed (issue #24: 1,880 acks
/// returned Ok on a full disk and all came back after a restart).
///
/// Checks invariant 18 (docs/design.md).
#[tokio::test]
async fn ack_confirmed_fails_when_its_journal_cannot_be_written() {
    use durabus_core::{AckKind, ConsumerConfig, StreamConfig};
    for durability in [Durability::Always, Durability::None] {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let faults = Faults::new(
            Arc::new(durabus_log::FsStorage::new()),
            Kind::Writes,
            u64::MAX,
            true,
        );
        let store =
            Store::open_with_storage(&data, Arc::new(faults.clone()), options(durability)).unwrap();
        store
            .create_stream(StreamConfig::new("S").subjects(["s.>"]))
            .await
            .unwrap();
        store
            .create_consumer("S", ConsumerConfig::durable("c"))
            .await
            .unwrap();
        for i in 0..3 {
            store
                .publish(Message::new(format!("s.{i}"), "x"))
                .await
                .unwrap();
        }
        let d = store
            .fetch("S", "c", 3, std::time::Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(d.len(), 3);
        faults.fail_from_next();
        let r = store.ack_confirmed(&d[0].ack, AckKind::Ack).await;
        assert!(
            matches!(&r, Err(e) if e.to_string().contains("injected")),
            "{durability:?}: {r:?}"
        );
        faults.heal();
        drop(store);
    }
}
