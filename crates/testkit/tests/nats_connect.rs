//! Connecting to real nats-servers that require credentials (user and
//! password, token, NKey, `.creds` files of decentralized JWT auth) or TLS,
//! or have no JetStream: what works, and the typed error when it does not.
//! No error text ever holds a password, token, seed or JWT.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use durabus::{ConnectOptions, ConnectionStatus, Error, StorageType, StreamConfig};
use durabus_testkit::nats::{NatsServer, OperatorAuth, Storage, TlsMode};

fn port_url(server: &NatsServer) -> String {
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
#[tokio::test]
async fn user_and_password_work_in_the_url_and_as_options_and_a_wrong_one_is_auth_failed() {
    let server = NatsServer::builder()
        .user_password("app", "pa55-word")
        .start()
        .unwrap();
    let host = port_url(&server);
    let bus = durabus::connect(&format!("nats://app:pa55-word@{host}"))
        .await
        .unwrap();
    works(&bus, "UP1").await;
    bus.close().await.unwrap();
    let bus = ConnectOptions::new()
        .user_and_password("app", "pa55-word")
        .connect(&format!("nats://{host}"))
        .await
        .unwrap();
    works(&bus, "UP2").await;
    bus.close().await.unwrap();

    for url in [
        format!("nats://app:wrong-secret@{host}"),
        format!("nats://{host}"),
    ] {
        let e = durabus::connect(&url).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::AuthFailed { .. }), "{url}: {text}");
        assert!(!text.contains("wrong-secret"), "{text}");
        assert!(text.contains(&host), "names the server: {text}");
    }
}

/// Checks invariant 14 (docs/design.md).
#[tokio::test]
async fn a_token_works_and_a_wrong_token_is_auth_failed_without_showing_it() {
    let server = NatsServer::builder().token("t0ken-abc").start().unwrap();
    let host = port_url(&server);
    let bus = durabus::connect(&format!("nats://t0ken-abc@{host}"))
        .await
        .unwrap();
    works(&bus, "TOK").await;
    bus.close().await.unwrap();
    let e = ConnectOptions::new()
        .token("n0t-the-token")
        .connect(&format!("nats://{host}"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AuthFailed { .. }), "{e}");
    assert!(!e.to_string().contains("n0t-the-token"), "{e}");
}

#[tokio::test]
async fn tls_with_the_servers_ca_works_and_an_untrusted_ca_is_a_tls_error() {
    let server = NatsServer::builder()
        .tls(TlsMode::ServerOnly)
        .start()
        .unwrap();
    let tls = server.tls().unwrap();
    let bus = ConnectOptions::new()
        .tls_ca_file(&tls.ca)
        .connect(&server.url())
        .await
        .unwrap();
    works(&bus, "TLS1").await;
    bus.close().await.unwrap();
    // The same through URL options.
    let url = format!("{}?tls_ca={}", server.url(), tls.ca.display());
    let bus = durabus::connect(&url).await.unwrap();
    bus.close().await.unwrap();

    let e = ConnectOptions::new()
        .tls_ca_file(&tls.untrusted_ca)
        .connect(&server.url())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e}");
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_trusted_ca() {
    let server = NatsServer::builder().tls(TlsMode::Mutual).start().unwrap();
    let tls = server.tls().unwrap();
    let bus = ConnectOptions::new()
        .tls_ca_file(&tls.ca)
        .tls_client_cert(&tls.client_cert, &tls.client_key)
        .connect(&server.url())
        .await
        .unwrap();
    works(&bus, "MTLS").await;
    bus.close().await.unwrap();

    let no_cert = ConnectOptions::new()
        .tls_ca_file(&tls.ca)
        .connect_timeout(Duration::from_secs(2))
        .connect(&server.url())
        .await
        .unwrap_err();
    eprintln!("no client certificate: {no_cert}");
    assert!(matches!(no_cert, Error::Tls { .. }), "{no_cert}");
    let untrusted = ConnectOptions::new()
        .tls_ca_file(&tls.ca)
        .tls_client_cert(&tls.untrusted_client_cert, &tls.untrusted_client_key)
        .connect_timeout(Duration::from_secs(2))
        .connect(&server.url())
        .await
        .unwrap_err();
    eprintln!("untrusted client certificate: {untrusted}");
    assert!(matches!(untrusted, Error::Tls { .. }), "{untrusted}");
}

#[tokio::test]
async fn a_server_without_jetstream_is_refused_saying_so() {
    let server = NatsServer::builder().jetstream(false).start().unwrap();
    let e = durabus::connect(&server.url()).await.unwrap_err();
    assert!(matches!(e, Error::JetStreamNotEnabled), "{e}");
    assert!(e.to_string().contains("-js"), "says how to fix it: {e}");
}

#[tokio::test]
async fn a_memory_only_server_refuses_file_streams_and_keeps_memory_ones() {
    let server = NatsServer::builder()
        .storage(Storage::Memory)
        .start()
        .unwrap();
    let bus = durabus::connect(&server.url()).await.unwrap();
    let e = bus
        .create_stream(StreamConfig::new("FILE").subjects(["file.>"]))
        .await
        .unwrap_err();
    eprintln!("file stream on a memory-only server: {e}");
    assert!(e.to_string().contains("storage"), "{e}");
    bus.create_stream(
        StreamConfig::new("MEM")
            .subjects(["mem.>"])
            .storage(StorageType::Memory),
    )
    .await
    .unwrap();
    assert!(bus.publish("mem.a", "x").await.unwrap().is_some());
    bus.close().await.unwrap();
}

#[tokio::test]
async fn unknown_streams_are_stream_not_found_as_on_the_embedded_backend() {
    let server = NatsServer::shared();
    let bus = durabus::connect(&server.url()).await.unwrap();
    for e in [
        bus.stream_info("NO_SUCH").await.unwrap_err(),
        bus.get_message("NO_SUCH", 1).await.unwrap_err(),
        bus.delete_stream("NO_SUCH").await.unwrap_err(),
    ] {
        assert!(
            matches!(e, Error::StreamNotFound { ref name } if name == "NO_SUCH"),
            "{e}"
        );
    }
    bus.close().await.unwrap();
}

/// Checks invariant 14 (docs/design.md).
#[tokio::test]
async fn readiness_never_shows_the_url_or_credentials() {
    let server = NatsServer::builder()
        .user_password("probe", "r3ady-secret")
        .start()
        .unwrap();
    let bus = durabus::connect(&format!("nats://probe:r3ady-secret@{}", port_url(&server)))
        .await
        .unwrap();
    let r = bus.readiness(Duration::from_secs(2)).await;
    assert!(r.ready && r.http_status() == 200);
    let body = r.body();
    for leak in [
        "r3ady-secret",
        "probe",
        "127.0.0.1",
        &server.port().to_string(),
    ] {
        assert!(!body.contains(leak), "{body}");
    }
    assert!(!format!("{bus:?}").contains("r3ady-secret"));
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_request_waits_for_its_own_timeout_not_the_clients_request_timeout() {
    let server = NatsServer::shared();
    let bus = ConnectOptions::new()
        .request_timeout(Duration::from_millis(200))
        .connect(&server.url())
        .await
        .unwrap();
    let mut service = bus.subscribe("slow.echo").await.unwrap();
    let responder = bus.clone();
    tokio::spawn(async move {
        while let Some(m) = service.next().await {
            tokio::time::sleep(Duration::from_millis(600)).await;
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, m.payload).await;
            }
        }
    });
    let answer = bus
        .request("slow.echo", "ping", Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(&answer.payload[..], b"ping");
    let e = bus
        .request("slow.echo", "ping", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Timeout(t) if t == Duration::from_millis(100)),
        "{e}"
    );
    bus.close().await.unwrap();
}

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

    let url = format!("nats://{}?creds={}", port_url(&server), creds.display());
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
            port_url(&server),
            stranger.display()
        ))
        .await
        .unwrap_err(),
    ] {
        let text = e.to_string();
        eprintln!("unknown account: {text}");
        assert!(matches!(e, Error::AuthFailed { .. }), "{text}");
        assert!(
            text.contains(&port_url(&server)),
            "names the server: {text}"
        );
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
        port_url(&server),
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
        .connect(&format!("nats://{}", port_url(&server)))
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
        format!("nats://{}", port_url(&server)),
        format!(
            "nats://{}?nkey_seed_file={}",
            port_url(&server),
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
        assert!(matches!(e, Error::InvalidConfig { .. }), "{text}");
        assert!(text.contains("nope.creds"), "names the file: {text}");
        assert!(text.contains("credentials file"), "{text}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused before any connection attempt"
    );
}
