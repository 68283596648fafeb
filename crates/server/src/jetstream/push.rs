//! Push consumers: a consumer created with a `deliver_subject` is served by
//! a task of the hub that fetches from the backend's consumer and pushes
//! each delivery to that subject, with idle heartbeats (ordered consumers
//! for replays and KV watches).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

/// The push consumers the hub delivers, by `(stream, consumer)`.
#[derive(Default)]
pub(crate) struct PushConsumers(Mutex<HashMap<(String, String), CancellationToken>>);
