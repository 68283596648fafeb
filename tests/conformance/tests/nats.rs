//! The conformance suite on the NATS JetStream backend, against one real
//! nats-server (started by durabus-testkit on a free port) shared by every
//! case of this test binary; cases keep apart by unique names.

// Setting up the backend is part of the test: failing to is a failed test.
#![allow(clippy::expect_used)]

durabus_conformance::conformance_suite!(durabus::connect(
    &durabus_testkit::nats::NatsServer::shared().url()
)
.await
.expect("connect to nats-server"));
