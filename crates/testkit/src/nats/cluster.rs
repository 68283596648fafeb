//! A JetStream cluster of real nats-servers on loopback.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::Value;

use super::process::{free_ports, unique_name};
use super::{ClusterSpec, NatsServer};

/// How long the meta group may take to elect a leader and catch up.
const READY: Duration = Duration::from_secs(30);
/// How often a cluster whose ports were taken meanwhile is tried again.
const ATTEMPTS: usize = 3;

/// A JetStream cluster of nats-servers on 127.0.0.1, each node with its own
/// store dir, client port, route port and monitoring port. Dropping it
/// kills every node.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> anyhow::Result<()> {
/// use anyhow::Context;
/// use durabus_testkit::nats::NatsCluster;
///
/// let cluster = NatsCluster::start(3)?;
/// let addrs = cluster
///     .url_list()
///     .iter()
///     .map(|u| u.parse())
///     .collect::<Result<Vec<async_nats::ServerAddr>, _>>()?;
/// let client = async_nats::connect(addrs).await?;
/// // ... create a replicas-3 stream, then:
/// cluster.node(1).context("node 1")?.kill()?;
/// cluster.node(1).context("node 1")?.restart()?;
/// cluster.wait_ready()?;
/// # drop(client); Ok(()) }
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    name: String,
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes (`server_name` `<cluster name>-n<i>`) routed to
    /// each other, and returns once they have a JetStream meta leader that
    /// every node follows and that sees every other node as current
    /// ([`NatsCluster::wait_ready`]): a stream with `size` replicas can be
    /// created at once.
    pub fn start(size: usize) -> anyhow::Result<Self> {
        ensure!(size >= 1, "a cluster needs at least one node");
        let mut attempt = 1;
        loop {
            match Self::try_start(size) {
                Ok(cluster) => return Ok(cluster),
                Err(_) if attempt < ATTEMPTS => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    fn try_start(size: usize) -> anyhow::Result<Self> {
        let name = unique_name("cluster");
        let ports = free_ports(3 * size)?;
        let (client, rest) = ports.split_at(size);
        let (route, monitor) = rest.split_at(size);
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            let routes = (0..size).filter(|&j| j != i).map(|j| route[j]).collect();
            let spec = ClusterSpec {
                name: name.clone(),
                port: route[i],
                routes,
            };
            let node = NatsServer::builder()
                .cluster_node(format!("{name}-n{i}"), client[i], monitor[i], spec)
                .start()
                .with_context(|| format!("starting node {i} of cluster {name}"))?;
            nodes.push(node);
        }
        let cluster = Self { name, nodes };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many nodes it has (running or not).
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i` (`0..size`), to kill, stop, resume or restart it.
    pub fn node(&self, i: usize) -> Option<&NatsServer> {
        self.nodes.get(i)
    }

    /// All nodes.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Every node's client URL, comma-separated
    /// (`nats://127.0.0.1:a,nats://127.0.0.1:b,...`).
    ///
    /// async-nats 0.46 parses a string as one URL, so give it
    /// [`NatsCluster::url_list`] parsed into `Vec<ServerAddr>` instead.
    pub fn urls(&self) -> String {
        self.url_list().join(",")
    }

    /// Every node's client URL.
    pub fn url_list(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The index of the node that is the JetStream meta leader, if the
    /// running nodes agree on one.
    pub fn meta_leader(&self) -> Option<usize> {
        let leader = self.view().agreed_leader()?;
        self.index_of(&leader)
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name() == name)
    }

    /// Waits until the running (and not paused) nodes, a majority of the
    /// cluster, all follow one JetStream meta leader, and that leader sees
    /// every one of them as current. Call it after restarting a node to
    /// wait until it has rejoined.
    pub fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY;
        loop {
            let view = self.view();
            ensure!(
                view.up.len() * 2 > self.nodes.len(),
                "only {} of {} nodes are running: no majority to elect a JetStream meta leader",
                view.up.len(),
                self.nodes.len()
            );
            let problem = match view.ready() {
                Ok(()) => return Ok(()),
                Err(problem) => problem,
            };
            if Instant::now() >= deadline {
                bail!("cluster {} not ready after {READY:?}: {problem}", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What each running node's `/jsz` says about the meta group now.
    fn view(&self) -> View {
        let up = self
            .nodes
            .iter()
            .filter(|n| n.is_running() && !n.is_paused())
            .map(|n| (n.name().to_owned(), n.monitor("/jsz")))
            .collect();
        View { up }
    }
}

/// The running nodes' names and their `/jsz` (or why it failed).
struct View {
    up: Vec<(String, anyhow::Result<Value>)>,
}

impl View {
    fn leader_of(jsz: &Value) -> Option<&str> {
        jsz["meta_cluster"]["leader"]
            .as_str()
            .filter(|l| !l.is_empty())
    }

    /// The leader all running nodes name, if they agree.
    fn agreed_leader(&self) -> Option<String> {
        let mut leaders = self
            .up
            .iter()
            .map(|(_, jsz)| jsz.as_ref().ok().and_then(Self::leader_of));
        let first = leaders.next()??;
        leaders.all(|l| l == Some(first)).then(|| first.to_owned())
    }

    fn ready(&self) -> Result<(), String> {
        for (name, jsz) in &self.up {
            match jsz {
                Err(e) => return Err(format!("{name}: {e:#}")),
                Ok(jsz) if Self::leader_of(jsz).is_none() => {
                    return Err(format!("{name} knows no meta leader"))
                }
                Ok(_) => {}
            }
        }
        let leader = self
            .agreed_leader()
            .ok_or_else(|| "the nodes name different meta leaders".to_owned())?;
        let Some(Ok(leader_jsz)) = self
            .up
            .iter()
            .find(|(name, _)| *name == leader)
            .map(|(_, jsz)| jsz)
        else {
            return Err(format!("meta leader {leader} is not a running node"));
        };
        let replicas = leader_jsz["meta_cluster"]["replicas"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (name, _) in &self.up {
            if *name == leader {
                continue;
            }
            let current = replicas
                .iter()
                .any(|r| r["name"].as_str() == Some(name) && r["current"].as_bool() == Some(true));
            if !current {
                return Err(format!(
                    "meta leader {leader} does not see {name} as current"
                ));
            }
        }
        Ok(())
    }
}
