//! Random operation sequences against a reference model ([`crate::model`]).

use durabus::Bus;

/// Publishes (with ids and expectations), deletes, purges of every kind,
/// gets, infos and replays in random order, under random limits, agree
/// with a plain model of JetStream's rules. Runs the fixed seeds of
/// [`crate::model::seeds`] (plus random ones on request); a failure
/// prints the seed (`DURABUS_MODEL_SEED` reruns it).
pub async fn random_operations_match_the_jetstream_model(bus: &Bus) {
    let bus = bus.clone();
    crate::model::run_all(
        400,
        move |_seed| std::future::ready(bus.clone()),
        None::<crate::model::NoReopen>,
    )
    .await;
}
