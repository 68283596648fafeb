//! The task-local [`Context`]: the trace, correlation id and service name
//! that publishes made inside [`scope`] carry (see [`crate::trace`] for the
//! injection rule).
//!
//! A consumer handler run by [`Bus::consume`](crate::Bus::consume) runs in
//! the received message's context, so what it publishes continues the
//! message's trace and keeps its correlation id. Task-locals do not follow
//! `tokio::spawn`: pass `Context::current()` to a spawned task's [`scope`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> durabus::Result<()> {
//! use durabus::context::{self, Context};
//! use durabus::MessageContext as _;
//! let bus = durabus::connect("memory:").await?;
//! bus.create_stream(durabus::StreamConfig::new("ORDERS").subjects(["orders.>"])).await?;
//! let ctx = Context::new().with_correlation_id("order-7").with_service("checkout");
//! context::scope(ctx, bus.publish("orders.created", "7")).await?;
//! let m = bus.get_message("ORDERS", 1).await?;
//! assert_eq!(m.correlation_id(), Some("order-7"));
//! assert_eq!(m.service(), Some("checkout"));
//! // No trace was in context to continue (`Propagation::Always` starts one).
//! assert!(m.trace_context().is_none());
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Arc;

use durabus_core::HeaderMap;

use crate::w3c::{TraceContext, CORRELATION_ID};

tokio::task_local! {
    static CURRENT: Context;
}

/// What publishes made in a [`scope`] carry: a trace to continue, a
/// correlation id, a service name. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Context {
    trace: Option<TraceContext>,
    correlation_id: Option<Arc<str>>,
    service: Option<Arc<str>>,
}

impl Context {
    /// An empty context: publishes start new traces.
    pub fn new() -> Self {
        Self::default()
    }

    /// The context of the current [`scope`] (empty outside any).
    pub fn current() -> Self {
        with_current(|c| c.cloned().unwrap_or_default())
    }

    /// The trace context of `headers` and their correlation id (not the
    /// sender's service: a handler publishes as its own service).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Context {
            trace: TraceContext::from_headers(headers),
            correlation_id: headers.get(CORRELATION_ID).map(Arc::from),
            service: None,
        }
    }

    /// Continue this trace.
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = Some(trace);
        self
    }

    /// Carry this correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(Arc::from(id.into()));
        self
    }

    /// Publish as this service (over the bus's service name).
    pub fn with_service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(Arc::from(name.into()));
        self
    }

    /// The trace continued by publishes.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    /// The correlation id.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// The service name.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }
}

/// Runs `future` with `context` as [`Context::current`].
pub async fn scope<F: Future>(context: Context, future: F) -> F::Output {
    CURRENT.scope(context, future).await
}

/// Runs `f` with `context` as [`Context::current`], synchronously.
pub fn sync_scope<R>(context: Context, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(context, f)
}

/// Calls `f` with the current context (a clone: a few reference counts,
/// none outside a scope).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Context>) -> R) -> R {
    f(CURRENT.try_with(Context::clone).ok().as_ref())
}
