//! The nats-server kit: real servers on free ports with auth, TLS, memory or
//! no JetStream, lifecycle control (kill, pause, restart), clusters, and
//! cleanup even when the test process dies. Each test starts its own
//! servers on 127.0.0.1.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions, ServerAddr};
use durabus_testkit::nats::{
    nats_server_binary, NatsCluster, NatsServer, Storage, TlsMode, NOT_INSTALLED,
};

/// Fails the test, saying how to install it, where nats-server is missing:
/// these tests are about a real server and never pass without one.
fn require_nats_server() {
    assert!(nats_server_binary().is_some(), "{NOT_INSTALLED}");
}

fn start(builder: durabus_testkit::nats::NatsServerBuilder) -> NatsServer {
    builder.start().unwrap_or_else(|e| panic!("start: {e:#}"))
}

async fn connect(opts: ConnectOptions, url: &str) -> Result<Client, async_nats::ConnectError> {
    opts.connection_timeout(Duration::from_secs(3))
        .request_timeout(Some(Duration::from_secs(3)))
        .connect(url)
        .await
}

/// `$JS.API.INFO` by hand: async-nats 0.46's `query_account` cannot parse
/// the account info of nats-server 2.9.10.
async fn account_info(client: &Client) {
    let reply = client.request("$JS.API.INFO", "".into()).await.unwrap();
    let text = String::from_utf8_lossy(&reply.payload);
    assert!(text.contains("account_info_response"), "{text}");
}

fn stream_config(name: &str, storage: stream::StorageType, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        storage,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Whether process `pid` has ended (a zombie waiting to be reaped counts).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) state ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Two servers get two ports; each accepts clients; dropping one stops the
/// process and removes its temp dir.
#[test]
fn nats_servers_start_on_free_ports_and_stop_on_drop() {
    require_nats_server();
    let a = NatsServer::start().unwrap_or_else(|e| panic!("start a: {e:#}"));
    let b = NatsServer::start().unwrap_or_else(|e| panic!("start b: {e:#}"));
    assert_ne!(a.port(), b.port());
    assert!(a.url().starts_with("nats://127.0.0.1:"));
    assert!(a.store_dir().starts_with(a.dir()));
    assert!(a.is_running());
    assert!(TcpStream::connect(("127.0.0.1", b.port())).is_ok());
    let (port, pid, dir) = (a.port(), a.pid(), a.dir().to_path_buf());
    drop(a);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening after drop"
    );
    assert!(gone(pid), "server process {pid} outlived its NatsServer");
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(std::ptr::eq(NatsServer::shared(), NatsServer::shared()));
}

#[tokio::test]
async fn user_password_is_accepted_and_a_wrong_password_refused() {
    require_nats_server();
    let server = start(NatsServer::builder().user_password("app", "s3cret"));
    let ok = ConnectOptions::with_user_and_password("app".into(), "s3cret".into());
    let client = connect(ok, &server.url()).await.unwrap();
    client.flush().await.unwrap();

    let wrong = ConnectOptions::with_user_and_password("app".into(), "guess".into());
    assert!(connect(wrong, &server.url()).await.is_err());
    assert!(connect(ConnectOptions::new(), &server.url()).await.is_err());
}

#[tokio::test]
async fn token_is_accepted_and_a_wrong_token_refused() {
    require_nats_server();
    let server = start(NatsServer::builder().token("t0ken"));
    let client = connect(ConnectOptions::with_token("t0ken".into()), &server.url())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let wrong = ConnectOptions::with_token("other".into());
    assert!(connect(wrong, &server.url()).await.is_err());
    assert!(connect(ConnectOptions::new(), &server.url()).await.is_err());
}

#[tokio::test]
async fn tls_with_the_generated_ca_works_and_plaintext_clients_are_refused() {
    require_nats_server();
    let server = start(NatsServer::builder().tls(TlsMode::ServerOnly));
    let tls = server.tls().unwrap().clone();
    assert!(server.url().starts_with("tls://127.0.0.1:"));
    let trusting = || ConnectOptions::new().add_root_certificates(tls.ca.clone());

    let client = connect(trusting(), &server.url()).await.unwrap();
    client.flush().await.unwrap();
    // nats:// works as well: the INFO says tls_required and the client
    // upgrades.
    let plain_url = format!("nats://127.0.0.1:{}", server.port());
    let upgraded = connect(trusting(), &plain_url).await.unwrap();
    upgraded.flush().await.unwrap();

    // A client that trusts another CA refuses the server's certificate.
    let other_ca = ConnectOptions::new().add_root_certificates(tls.untrusted_ca.clone());
    assert!(connect(other_ca, &server.url()).await.is_err());
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_its_ca() {
    require_nats_server();
    let server = start(NatsServer::builder().tls(TlsMode::Mutual));
    let tls = server.tls().unwrap().clone();
    let trusting = || ConnectOptions::new().add_root_certificates(tls.ca.clone());

    let good = trusting().add_client_certificate(tls.client_cert.clone(), tls.client_key.clone());
    let client = connect(good, &server.url()).await.unwrap();
    client.flush().await.unwrap();

    let untrusted = trusting().add_client_certificate(
        tls.untrusted_client_cert.clone(),
        tls.untrusted_client_key.clone(),
    );
    let refused = async {
        // With TLS 1.3 the client may finish its handshake before the
        // server checks the certificate; then the server hangs up at once.
        match connect(untrusted, &server.url()).await {
            Err(_) => true,
            Ok(c) => c.flush().await.is_err(),
        }
    };
    assert!(refused.await, "a certificate from another CA was accepted");
    let anonymous = async {
        match connect(trusting(), &server.url()).await {
            Err(_) => true,
            Ok(c) => c.flush().await.is_err(),
        }
    };
    assert!(
        anonymous.await,
        "a client without a certificate was accepted"
    );
}

#[tokio::test]
async fn file_streams_survive_kill_and_restart() {
    require_nats_server();
    let server = NatsServer::start().unwrap();
    let port = server.port();
    let client = connect(ConnectOptions::new(), &server.url()).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(stream_config("KEEP", stream::StorageType::File, 1))
        .await
        .unwrap();
    js.publish("keep.1", "kept".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let old_pid = server.pid();
    server.kill().unwrap();
    assert!(!server.is_running());
    assert!(gone(old_pid));
    server.restart().unwrap();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), old_pid);

    let client = connect(ConnectOptions::new(), &server.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = js.get_stream("KEEP").await.unwrap();
    let msg = stream.get_raw_message(1).await.unwrap();
    assert_eq!(&msg.payload[..], b"kept");
}

#[tokio::test]
async fn a_stopped_server_times_out_requests_until_resumed() {
    require_nats_server();
    let server = NatsServer::start().unwrap();
    let client = ConnectOptions::new()
        .request_timeout(Some(Duration::from_millis(500)))
        .connect(server.url())
        .await
        .unwrap();
    account_info(&client).await;

    server.stop().unwrap();
    assert!(server.is_paused() && server.is_running());
    let started = Instant::now();
    let hung = client.request("$JS.API.INFO", "".into()).await;
    let err = hung.expect_err("a stopped server answered");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));

    server.resume().unwrap();
    assert!(!server.is_paused());
    account_info(&client).await;
}

#[tokio::test]
async fn memory_only_server_refuses_file_streams_and_forgets_on_restart() {
    require_nats_server();
    let server = start(NatsServer::builder().storage(Storage::Memory));
    assert_eq!(server.jetstream(), Some(Storage::Memory));
    let client = connect(ConnectOptions::new(), &server.url()).await.unwrap();
    let js = jetstream::new(client);
    let file = js
        .create_stream(stream_config("ONDISK", stream::StorageType::File, 1))
        .await;
    let err = file.expect_err("a memory-only server took a file stream");
    assert!(err.to_string().contains("insufficient storage"), "{err}");
    js.create_stream(stream_config("INMEM", stream::StorageType::Memory, 1))
        .await
        .unwrap();
    js.publish("inmem.1", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();

    server.restart().unwrap();
    let client = connect(ConnectOptions::new(), &server.url()).await.unwrap();
    let js = jetstream::new(client);
    assert!(
        js.get_stream("INMEM").await.is_err(),
        "memory stream survived"
    );
}

#[tokio::test]
async fn server_without_jetstream_has_no_jetstream_api() {
    require_nats_server();
    let server = start(NatsServer::builder().jetstream(false));
    assert_eq!(server.jetstream(), None);
    let client = connect(ConnectOptions::new(), &server.url()).await.unwrap();
    client.flush().await.unwrap();
    let reply = client.request("$JS.API.INFO", "".into()).await;
    let err = reply.expect_err("something answered the JetStream API");
    assert_eq!(
        err.kind(),
        async_nats::RequestErrorKind::NoResponders,
        "{err}"
    );
    let js = jetstream::new(client);
    let created = js
        .create_stream(stream_config("NOJS", stream::StorageType::File, 1))
        .await;
    assert!(created.is_err());
}

#[tokio::test]
async fn cluster_keeps_a_replicated_stream_through_a_node_kill_and_the_node_rejoins() {
    require_nats_server();
    let cluster = NatsCluster::start(3).unwrap_or_else(|e| panic!("cluster: {e:#}"));
    assert_eq!(cluster.urls().split(',').count(), 3);
    let addrs: Vec<ServerAddr> = cluster
        .url_list()
        .iter()
        .map(|u| u.parse().unwrap())
        .collect();
    let client = ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(addrs)
        .await
        .unwrap();
    let mut js = jetstream::new(client);
    // A publish sent to a node as it is killed is lost: retry soon.
    js.set_timeout(Duration::from_millis(500));
    // Right after start: a replicas-3 stream is accepted.
    let mut stream = js
        .create_stream(stream_config("R3", stream::StorageType::File, 3))
        .await
        .unwrap();
    js.publish("r3.1", "r3.1".into())
        .await
        .unwrap()
        .await
        .unwrap();

    // Kill a follower of the stream (and, where possible, not the meta
    // leader: a new leader takes raft 4-9 s to elect in 2.9): the other two
    // go on accepting publishes.
    let info = stream.info().await.unwrap().cluster.clone().unwrap();
    let stream_leader = info.leader.unwrap();
    let meta_leader = cluster.meta_leader().unwrap();
    let followers: Vec<usize> = (0..3)
        .filter(|&i| cluster.node(i).unwrap().name() != stream_leader)
        .collect();
    assert_eq!(followers.len(), 2);
    let victim = followers
        .iter()
        .copied()
        .find(|&i| i != meta_leader)
        .unwrap_or(followers[0]);
    let third = followers.into_iter().find(|&i| i != victim).unwrap();
    let node = cluster.node(victim).unwrap();
    node.kill().unwrap();
    assert_eq!(publish_until_acked(&js, "r3.2").await, 2);

    // The node comes back and catches up...
    node.restart().unwrap();
    cluster.wait_ready().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = stream.get_info().await;
        let rejoined = info.ok().and_then(|i| i.cluster).is_some_and(|c| {
            c.replicas
                .iter()
                .any(|r| r.name == node.name() && r.current)
        });
        if rejoined {
            break;
        }
        assert!(Instant::now() < deadline, "{} did not rejoin", node.name());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // ... and takes part again: with the other follower down, the leader
    // needs its acknowledgement to accept a publish, which raft gives only
    // once it holds everything before.
    cluster.node(third).unwrap().kill().unwrap();
    assert_eq!(publish_until_acked(&js, "r3.3").await, 3);
    let mut stream = js.get_stream("R3").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 3);
    let second = stream.get_raw_message(2).await.unwrap();
    assert_eq!(&second.payload[..], b"r3.2");
}

/// Publishes until the stream acknowledges and returns the sequence. A
/// publish can time out (sent to a node as it died) or find no stream
/// (while the replica group settles after a node died).
async fn publish_until_acked(js: &jetstream::Context, subject: &'static str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "no publish to {subject} accepted"
        );
        if let Ok(ack) = js.publish(subject, subject.into()).await {
            if let Ok(ack) = ack.await {
                return ack.sequence;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Not a test of its own: the child process of
/// `no_server_outlives_a_killed_test_process`, which runs it with
/// `--ignored --exact` and kills it. It starts (and pauses) a server, says
/// where it is, and waits to be killed.
#[test]
#[ignore = "the child process of no_server_outlives_a_killed_test_process, which runs and kills it"]
fn helper_server_for_a_killed_process() {
    let server = NatsServer::start().unwrap();
    // Even a paused server must not survive its killed process.
    server.stop().unwrap();
    // libtest prints "test <name> ... " before this, on the same line.
    println!("\nHELPER {} {}", server.pid(), server.dir().display());
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn no_server_outlives_a_killed_test_process() {
    require_nats_server();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_server_for_a_killed_process",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (pid, dir) = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "helper said nothing");
        let Some(rest) = line.trim().strip_prefix("HELPER ") else {
            continue;
        };
        if let Some((pid, dir)) = rest.split_once(' ') {
            if let Ok(pid) = pid.parse::<u32>() {
                break (pid, PathBuf::from(dir));
            }
        }
    };
    assert!(!gone(pid) && dir.exists());
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(pid) || dir.exists() {
        assert!(
            Instant::now() < deadline,
            "server {pid} or {} outlived its killed test process",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
