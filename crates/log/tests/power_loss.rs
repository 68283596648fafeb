//! R2 and R6: power loss. A workload (`common/workload.rs`: stream creation,
//! publishes across segment rolls, a consumer with acks and its state file,
//! a delete, a purge that removes segments, close) runs on the power-loss shim
//! (`common/power_loss.rs`), which loses power at mutating operation N, for
//! N = 1, 2, ... until the workload completes. Each loss is written out as
//! a disk could hold it (unsynced writes dropped, reordered, torn by
//! sector; directory entries synced or not) and the store is reopened from
//! it on the real file system:
//!
//! - `Always`: nothing acknowledged is lost (stream, publishes, delete,
//!   purge, consumer), what is stored is a gap-free prefix of the
//!   publishes, and the purge is all or nothing;
//! - `None`: the store opens and holds a valid prefix of the publishes;
//! - `Periodic(T)`: the same, and only publishes acknowledged within T
//!   (plus scheduling slack) before the loss may be missing.
//!
//! Images per N: `DURABUS_POWER_LOSS_IMAGES` (default 2; `scripts/soak`
//! runs more). Seed: `DURABUS_CRASH_SEED`.
//!
//! Checks invariants 3, 6, 10 (docs/design.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::power_loss::{PowerLoss, Rng};
use common::workload::{check, options, payload, stored, workload, Acked, STREAM};
use durabus_core::{Backend, Message, StreamConfig};
use durabus_log::{Durability, Store};
use rand::SeedableRng;

fn seed() -> u64 {
    std::env::var("DURABUS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn images() -> u64 {
    std::env::var("DURABUS_POWER_LOSS_IMAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

async fn power_loss_at_every_operation(durability: Durability) {
    let seed = seed();
    let mut rng = Rng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let mut n = 1;
    loop {
        let shim = PowerLoss::new(&data, n);
        let acked =
            match Store::open_with_storage(&data, Arc::new(shim.clone()), options(durability)) {
                Ok(store) => {
                    let acked = workload(&store).await;
                    drop(store);
                    acked
                }
                Err(_) => Acked::default(),
            };
        if acked.completed && !shim.crashed() {
            assert!(n > 50, "the workload took only {n} operations");
            return;
        }
        for image in 0..images() {
            let dir = root.path().join(format!("image-{n}-{image}"));
            shim.image(&dir, &mut rng);
            let what = format!(
                "{durability:?}, power lost at operation {n}, image {image} (DURABUS_CRASH_SEED={seed}), acked {acked:?}"
            );
            check(&dir, durability, &acked, &what).await;
            std::fs::remove_dir_all(&dir).unwrap();
        }
        n += 1;
    }
}

#[tokio::test]
async fn power_loss_under_always_loses_nothing_acknowledged() {
    power_loss_at_every_operation(Durability::Always).await;
}

#[tokio::test]
async fn power_loss_under_none_leaves_a_valid_prefix() {
    power_loss_at_every_operation(Durability::None).await;
}

/// Periodic(T): publishes 15 ms apart into one segment (a roll would sync
/// it), power lost at every 4th operation;
/// a publish acknowledged longer than T (plus slack for a loaded machine)
/// before the loss is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_under_periodic_loses_only_the_last_interval() {
    const T: Duration = Duration::from_millis(20);
    const SLACK: Duration = Duration::from_millis(200);
    let durability = Durability::Periodic(T);
    let seed = seed();
    let mut rng = Rng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let mut n = 1;
    // Publishes old enough to be checked, over all losses.
    let mut checked = 0;
    loop {
        let shim = PowerLoss::new(&data, n);
        let mut acks: Vec<(u64, Instant)> = Vec::new();
        let mut finished = false;
        if let Ok(store) = Store::open_with_storage(
            &data,
            Arc::new(shim.clone()),
            options(durability).segment_size(1 << 20),
        ) {
            let created = store
                .create_stream(StreamConfig::new(STREAM).subjects(["s.>"]))
                .await
                .is_ok();
            for i in 1..=30u64 {
                if !created {
                    break;
                }
                match store
                    .publish(Message::new(format!("s.{}", i % 3), payload(i)))
                    .await
                {
                    Ok(Some(ack)) => acks.push((ack.seq, Instant::now())),
                    _ => break,
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            finished = acks.len() == 30 && store.close().await.is_ok();
        }
        if finished && !shim.crashed() {
            assert!(
                checked > 20,
                "only {checked} publishes were old enough to check"
            );
            return;
        }
        let lost = shim.lost_at().unwrap_or_else(Instant::now);
        let dir = root.path().join(format!("image-{n}"));
        shim.image(&dir, &mut rng);
        let what =
            format!("{durability:?}, power lost at operation {n} (DURABUS_CRASH_SEED={seed})");
        let store = Store::open(&dir, options(durability))
            .unwrap_or_else(|e| panic!("{what}: the store does not open: {e}"));
        let have: Vec<u64> = match store.stream_info(STREAM).await {
            Ok(_) => stored(&store).await.into_iter().map(|m| m.0).collect(),
            Err(_) => Vec::new(),
        };
        for (seq, at) in &acks {
            if lost.saturating_duration_since(*at) > T + SLACK {
                checked += 1;
                assert!(
                    have.contains(seq),
                    "{what}: seq {seq}, acked {:?} before the loss, is gone (have {have:?})",
                    lost.saturating_duration_since(*at)
                );
            }
        }
        store.close().await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        n += 4;
    }
}
