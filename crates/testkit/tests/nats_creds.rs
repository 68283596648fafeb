//! `.creds` files (user JWT and NKey seed, decentralized JWT auth) and
//! plain NKey users against real nats-servers, through the durabus facade,
//! with JetStream: what works, and the typed error when it does not. No
//! error text holds a seed or a JWT.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use durabus::{ConnectOptions, ConnectionStatus, Error, StreamConfig};
use durabus_testkit::nats::{NatsServer, OperatorAuth};

fn host(server: &NatsServer) -> String {
    format!("127.0.0.1:{}", server.port())
}

/// Creates `stream`, publishes to it and checks the ack.
async fn works(bus: &durabus::Bus, stream: &str) {
    let subject = format!("{}.a", stream.to_lowercase());
    bus.create_stream(StreamConfig::new(stream).subjects([subject.clone()]))
        .await
        .unwrap();
    let ack = bus.publish(subject, "x").await.unwrap().unwrap();
    assert_eq!(ack.stream, stream);
    assert_eq!(ack.seq, 1);
    assert_eq!(bus.status(), ConnectionStatus::Connected);
}

/// The JWT and the seed of a `.creds` file: what no error may show.
fn creds_secrets(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let secrets: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("eyJ") || l.starts_with("SU"))
        .map(str::to_owned)
        .collect();
    assert_eq!(secrets.len(), 2, "a JWT and a seed: {path:?}");
    secrets
}

fn log(server: &NatsServer) -> String {
    std::fs::read_to_string(server.log_file()).unwrap_or_default()
}

#[tokio::test]
async fn a_creds_file_connects_and_jetstream_works() {
    let server = NatsServer::builder().operator_mode().start().unwrap();
    let creds = server.creds_file().unwrap();
    let bus = ConnectOptions::new()
        .credentials_file(creds)
        .connect(&server.url())
        .await
        .unwrap_or_else(|e| panic!("{e}; server log:\n{}", log(&server)));
    works(&bus, "CREDS1").await;
    bus.close().await.unwrap();

    let url = format!("nats://{}?creds={}", host(&server), creds.display());
    let bus = durabus::connect(&url).await.unwrap();
    works(&bus, "CREDS2").await;
    let info = bus.stream_info("CREDS1").await.unwrap();
    assert_eq!(info.state.messages, 1, "both connections are one account");
    bus.close().await.unwrap();
}

#[tokio::test]
async fn creds_of_an_unknown_account_are_auth_failed() {
    let server = NatsServer::builder().operator_mode().start().unwrap();
    let auth: &OperatorAuth = server.operator_auth().unwrap();
    let stranger = &auth.unknown_account_creds_file;
    let secrets = creds_secrets(stranger);
    for e in [
        ConnectOptions::new()
            .credentials_file(stranger)
            .connect_timeout(Duration::from_secs(2))
            .connect(&server.url())
            .await
            .unwrap_err(),
        durabus::connect(&format!(
            "nats://{}?creds={}&connect_timeout=2s",
            host(&server),
            stranger.display()
        ))
        .await
        .unwrap_err(),
    ] {
        let text = e.to_string();
        eprintln!("unknown account: {text}");
        assert!(matches!(e, Error::AuthFailed { .. }), "{text}");
        assert!(text.contains(&host(&server)), "names the server: {text}");
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{text}");
            assert!(!format!("{e:?}").contains(s.as_str()), "{e:?}");
        }
    }
    // The server says why (2.9.10 does not name the account).
    let log = log(&server);
    assert!(
        log.contains("Account fetch failed: account missing"),
        "{log}"
    );
    assert!(log.contains("authentication error"), "{log}");

    // A creds file of a known user is still fine on the same server.
    let bus = ConnectOptions::new()
        .credentials_file(server.creds_file().unwrap())
        .connect(&server.url())
        .await
        .unwrap();
    bus.close().await.unwrap();
}

#[tokio::test]
async fn an_nkey_seed_authenticates() {
    let server = NatsServer::builder().nkey_user().start().unwrap();
    let seed_file = server.nkey_seed_file().unwrap();
    let seed = std::fs::read_to_string(seed_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(seed.starts_with("SU"), "a user seed");
    let url = format!(
        "nats://{}?nkey_seed_file={}",
        host(&server),
        seed_file.display()
    );
    let bus = durabus::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}; server log:\n{}", log(&server)));
    works(&bus, "NKEY").await;
    assert!(!format!("{bus:?}").contains(&seed));
    bus.close().await.unwrap();
    // The same with the seed given to ConnectOptions.
    let bus = durabus::ConnectOptions::new()
        .nkey_seed(seed.clone())
        .connect(&format!("nats://{}", host(&server)))
        .await
        .unwrap();
    works(&bus, "NKEY2").await;
    bus.close().await.unwrap();

    // Without the seed, or with another user's, the server refuses.
    let other = durabus_testkit::temp_dir();
    let other_seed = other.path().join("other.nk");
    let stranger = NatsServer::builder().nkey_user().start().unwrap();
    std::fs::copy(stranger.nkey_seed_file().unwrap(), &other_seed).unwrap();
    let stranger_seed = std::fs::read_to_string(&other_seed)
        .unwrap()
        .trim()
        .to_owned();
    for url in [
        format!("nats://{}", host(&server)),
        format!(
            "nats://{}?nkey_seed_file={}",
            host(&server),
            other_seed.display()
        ),
    ] {
        let e = durabus::connect(&url).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::AuthFailed { .. }), "{url}: {text}");
        assert!(!text.contains(&stranger_seed), "{text}");
    }
}

#[tokio::test]
async fn a_missing_creds_file_is_a_clear_error_before_connecting() {
    let dir = durabus_testkit::temp_dir();
    let missing = dir.path().join("nope.creds");
    // Nothing listens there: an attempt to connect would be Unreachable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let started = Instant::now();
    for e in [
        ConnectOptions::new()
            .credentials_file(&missing)
            .connect(&url)
            .await
            .unwrap_err(),
        durabus::connect(&format!("{url}?creds={}", missing.display()))
            .await
            .unwrap_err(),
    ] {
        let text = e.to_string();
        eprintln!("missing creds file: {text}");
        assert!(matches!(e, Error::InvalidConfig(_)), "{text}");
        assert!(text.contains("nope.creds"), "names the file: {text}");
        assert!(text.contains("credentials file"), "{text}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused before any connection attempt"
    );
}
