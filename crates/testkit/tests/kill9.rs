//! R1 (and R10): acknowledged publishes survive SIGKILL of the publishing
//! process, at random moments, across repeated kills of one data directory.
//!
//! Trials: `DURABUS_CRASH_TRIALS` (default 20; `scripts/soak` runs
//! thousands). Seed: `DURABUS_CRASH_SEED` (default random, printed on
//! failure together with a command that reproduces the trial).
//!
//! Checks invariant 1 (docs/design.md).

use std::time::Duration;

use durabus_testkit::crash::{run_cases, run_trials, Case, CrashPlan, Kill};
use durabus_testkit::env_count;

fn plan() -> CrashPlan {
    CrashPlan::new(env!("CARGO_BIN_EXE_crash_publisher"))
}

/// Under `always` every ack was fsynced: a kill loses none of them, nor the
/// dedup state, and the store reopens and takes new publishes.
///
/// Checks invariant 3 (docs/design.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_publishes_survive_kill9_with_always() {
    let trials = env_count("DURABUS_CRASH_TRIALS", 20);
    let report = run_trials(&plan(), trials, "acked_publishes_survive_kill9_with_always").await;
    assert!(
        trials == 0 || report.acked > 0,
        "no trial acknowledged anything"
    );
}

/// Under `none` an ack means "written to the OS": a process kill (not a
/// power loss) must lose nothing either.
///
/// Checks invariant 3 (docs/design.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_publishes_survive_kill9_with_none() {
    let trials = env_count("DURABUS_CRASH_TRIALS", 20).div_ceil(2);
    let report = run_trials(
        &plan().durability("none"),
        trials,
        "acked_publishes_survive_kill9_with_none",
    )
    .await;
    assert!(
        trials == 0 || report.acked > 0,
        "no trial acknowledged anything"
    );
}

/// Segments of 4 KiB roll every few dozen messages, so kills land inside
/// segment rolls (new file, directory fsync, index and checkpoint writes):
/// recovery must still find every ack (docs/reliability.md R6, by kill).
///
/// Checks invariant 3 (docs/design.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_publishes_survive_kill9_during_segment_rolls() {
    let trials = env_count("DURABUS_CRASH_TRIALS", 20).div_ceil(2);
    let report = run_trials(
        &plan().segment_size(4096),
        trials,
        "acked_publishes_survive_kill9_during_segment_rolls",
    )
    .await;
    assert!(
        trials == 0 || report.acked > 0,
        "no trial acknowledged anything"
    );
}

/// `periodic` fsyncs on a timer; a process kill must still lose no ack.
///
/// Checks invariant 3 (docs/design.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_publishes_survive_kill9_with_periodic() {
    let trials = env_count("DURABUS_CRASH_TRIALS", 20).div_ceil(4);
    let report = run_trials(
        &plan().durability("periodic:20ms"),
        trials,
        "acked_publishes_survive_kill9_with_periodic",
    )
    .await;
    assert!(
        trials == 0 || report.acked > 0,
        "no trial acknowledged anything"
    );
}

/// Children also delete some of their own acknowledged messages: a delete
/// that was acknowledged stays deleted after the kill (no resurrection),
/// gaps appear only where deletes were requested, everything else acked is
/// there (design.md invariant 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_deletes_stay_deleted_after_kill9() {
    let trials = env_count("DURABUS_CRASH_TRIALS", 20).div_ceil(2);
    let report = run_trials(
        &plan().delete_every(3).segment_size(8192),
        trials,
        "acked_deletes_stay_deleted_after_kill9",
    )
    .await;
    assert!(
        trials == 0 || report.deleted > 0,
        "no trial deleted anything"
    );
}

/// A child task also purges the stream below a recent seq now and then,
/// on 4 KiB segments so purges remove whole segment files: an acknowledged
/// purge stays done after the kill, a purge cut off by the kill is all or
/// nothing, and everything else acked is there.
///
/// Checks invariant 10 (docs/design.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_purges_stay_done_after_kill9() {
    let name = "acked_purges_stay_done_after_kill9";
    let plan = plan().purge_every(7).segment_size(4096);
    let fixed = run_cases(&plan, PURGE_REGRESSIONS, 3, name).await;
    let trials = env_count("DURABUS_CRASH_TRIALS", 20).div_ceil(2);
    let report = run_trials(&plan, trials, name).await;
    assert!(
        fixed.acked > 0 && (trials == 0 || report.acked > 0),
        "no trial acknowledged anything"
    );
}

/// Purge trials that failed once, run (3 times each, about a second in
/// all) before the random ones on every run. Issue 15: seed
/// 12526061570303276835, as `CrashPlan::kills` draws it now, and the kills
/// the same seed drew before the harness moved from testkit's SplitMix
/// `Rng` to rand's `StdRng` (8fc33a8), which that seed no longer selects.
const PURGE_REGRESSIONS: &[Case] = &[
    Case::Seed(12_526_061_570_303_276_835),
    Case::Kills(&[
        Kill::AfterSpawn(Duration::from_micros(47_661)),
        Kill::AfterAcks(69, Duration::from_micros(2_138)),
        Kill::AfterAcks(10, Duration::from_micros(1_393)),
    ]),
];
