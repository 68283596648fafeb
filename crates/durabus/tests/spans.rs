//! The `tracing` spans durabus opens: names and fields, captured by a
//! small subscriber layer on a current-thread runtime.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durabus::{ConsumeOptions, ConsumerConfig, MessageContext as _, Outcome, StreamConfig};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::Layer;

type Fields = BTreeMap<String, String>;

/// Span id, name, fields.
type SpanLog = Vec<(u64, &'static str, Fields)>;

/// Every span opened, by id: its name and fields (recorded ones included).
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<SpanLog>>);

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").replace('"', ""),
        );
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Collect(&mut fields));
        let name = attrs.metadata().name();
        self.0.lock().unwrap().push((id.into_u64(), name, fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, _, fields)) = spans.iter_mut().find(|(i, _, _)| *i == id.into_u64()) {
            values.record(&mut Collect(fields));
        }
    }
}

impl Spans {
    fn named(&self, name: &str) -> Vec<Fields> {
        let spans = self.0.lock().unwrap();
        spans
            .iter()
            .filter(|(_, n, _)| *n == name)
            .map(|(_, _, f)| f.clone())
            .collect()
    }
}

#[test]
fn publish_batch_consume_and_request_open_spans_with_their_fields() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Always: every publish carries a trace id for the spans to show.
        let bus = durabus::ConnectOptions::new()
            .propagation(durabus::Propagation::Always)
            .connect("memory:")
            .await
            .unwrap();
        bus.create_stream(StreamConfig::new("S").subjects(["s.>"]))
            .await
            .unwrap();
        bus.publish("s.one", "1").await.unwrap();
        bus.publish_batch(vec![durabus::Message::new("s.two", "2")])
            .await
            .unwrap();
        let first = bus.get_message("S", 1).await.unwrap();
        let trace_id = first.trace_context().unwrap().trace_id().to_string();

        let publish = spans.named("durabus.publish");
        assert_eq!(publish.len(), 1, "{publish:?}");
        assert_eq!(publish[0]["subject"], "s.one");
        assert_eq!(publish[0]["stream"], "S");
        assert_eq!(publish[0]["seq"], "1");
        assert_eq!(publish[0]["trace_id"], trace_id);
        let batch = spans.named("durabus.publish_batch");
        assert_eq!(batch[0]["count"], "1");
        assert_eq!(batch[0]["trace_id"].len(), 32);

        bus.create_consumer("S", ConsumerConfig::durable("c"))
            .await
            .unwrap();
        let handle = bus
            .consume("S", "c", ConsumeOptions::new(), |_| async { Outcome::Done })
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while handle.stats().acked < 2 {
            assert!(tokio::time::Instant::now() < deadline, "not consumed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        handle.shutdown().await.unwrap();
        let consume = spans.named("durabus.consume");
        let one = consume.iter().find(|f| f["seq"] == "1").unwrap();
        assert_eq!(one["stream"], "S");
        assert_eq!(one["consumer"], "c");
        assert_eq!(one["subject"], "s.one");
        assert_eq!(one["delivered"], "1");
        assert_eq!(one["trace_id"], trace_id);

        let _ = bus
            .request("nobody.home", "?", Duration::from_millis(200))
            .await;
        let request = spans.named("durabus.request");
        assert_eq!(request[0]["subject"], "nobody.home");
        assert_eq!(request[0]["trace_id"].len(), 32);
        bus.close().await.unwrap();
    });
}
