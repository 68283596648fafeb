//! `durabus bench`: the workloads W1-W8 of docs/performance.md on the
//! backend of `--url`, by durabus alone. The peers (raw async-nats, Redis
//! Streams) and the comparison report are the `durabus-bench` harness's.

use crate::session::Global;

/// Runs `durabus bench`.
pub(crate) async fn run(global: &Global, args: durabus_workloads::BenchArgs) -> anyhow::Result<()> {
    let at = durabus_workloads::Where::Bus(global.url.as_deref());
    let mut bench = durabus_workloads::Bench::new(&args, at, global.json)?;
    // W8 reopens its stores in a fresh `durabus w8-probe` and times this
    // binary's `stream ls`.
    let exe = std::env::current_exe().ok();
    bench.plan.w8.probe.clone_from(&exe);
    bench.plan.w8.cli = exe;
    bench.announce("durabus");
    for run in 1..=bench.runs() {
        bench.begin_run(run);
        let results = bench.measure(None::<std::future::Ready<_>>).await?;
        bench.end_run(results);
    }
    bench.finish(None, crate::output::table())
}
