//! The cluster's commands: joining one (`serve --cluster`, wired here) and
//! looking at one (`lastmile cluster status`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lastmile_cluster::names::Names;
use lastmile_cluster::{ClusterConfig, Member, Status};
use lastmile_node::Node;
use lastmile_node::cluster::SharedNames;
use lastmile_node::ids::Directory;
use serde_json::json;

/// The cluster's shared names, for a node about to start.
pub async fn shared_names(c: &ClusterConfig) -> Result<Arc<dyn Directory>> {
    let js = lastmile_cluster::connect(&c.url, c.log.connect_timeout).await?;
    let within = c.log.connect_timeout * 4;
    let names = lastmile_cluster::retrying("opening the names bucket", within, || {
        Names::open(&js, c.log.replicas)
    })
    .await?;
    Ok(SharedNames::new(names, tokio::runtime::Handle::current()))
}

/// Joins the cluster with the node's engine: its front ends publish from
/// now on, and its engine drives the partitions it comes to own.
pub async fn join(node: &Arc<Node>, c: ClusterConfig) -> Result<()> {
    let engine = node
        .sink
        .engine()
        .context("a cluster node runs the engine")?
        .clone();
    let about = format!("quic={} pid={}", node.config.listen, std::process::id());
    let (url, name) = (c.url.clone(), c.node.clone());
    let weak = Arc::downgrade(node);
    let observe = Box::new(move |t: f64| {
        if let Some(node) = weak.upgrade() {
            node.clock.observe(t);
        }
    });
    let member = Member::join(c, engine.clone(), about, observe)
        .await
        .with_context(|| format!("joining the cluster at {url}"))?;
    // Dispatchers' commands are ordered by the cluster's log, on every
    // node alike, from before any front end takes one.
    engine.set_command_log(member.commands());
    // A query for a vehicle another node drives is asked of its owner.
    engine.set_remote_vehicles(member.remote_vehicles());
    // Learnt traffic and ETA errors are the fleet's: each node's ticks
    // learn from every node's partitions.
    engine.set_learning_exchange(member.learning());
    // A customer's tracking link opens on any node: each follows the
    // grants every node shares.
    let weak = Arc::downgrade(node);
    member.grants().follow(move |g| {
        if let Some(node) = weak.upgrade() {
            node.auth
                .restore_tracking(&lastmile_node::store::StoredGrant {
                    digest: g.digest,
                    fleet: g.fleet,
                    stop: g.stop,
                    expires_ms: g.expires_ms,
                });
        }
    });
    tracing::info!(node = %name, url = %url, "joined the cluster");
    let _ = node.cluster.set(member);
    Ok(())
}

/// A node's name by default: the host's, and the QUIC port (two nodes on
/// one host differ by port).
pub fn default_node_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let host = if host.is_empty() {
        "lastmile".into()
    } else {
        host
    };
    format!("{host}-{port}")
}

#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Nodes alive, and each partition's owner, last applied batch and lag.
    Status {
        /// The NATS servers, comma-separated (nats://host:port).
        #[arg(long)]
        cluster: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn cluster(a: ClusterArgs) -> Result<()> {
    let ClusterCommand::Status { cluster, json } = a.command;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let status = runtime.block_on(Status::fetch(&cluster, Duration::from_secs(5)))?;
    if json {
        let partitions: Vec<_> = status
            .partitions
            .iter()
            .map(|p| {
                json!({
                    "partition": p.partition,
                    "owner": p.owner,
                    "applied": p.applied,
                    "last": p.last,
                    "lag": p.lag(),
                })
            })
            .collect();
        let nodes: Vec<_> = status
            .nodes
            .iter()
            .map(|(name, about)| {
                let owned = status
                    .partitions
                    .iter()
                    .filter(|p| p.owner.as_deref() == Some(name))
                    .count();
                json!({"node": name, "about": about, "partitions": owned})
            })
            .collect();
        let webhooks: Vec<_> = status
            .webhooks
            .iter()
            .map(|(name, node)| json!({"webhook": name, "node": node}))
            .collect();
        println!(
            "{}",
            json!({"nodes": nodes, "partitions": partitions, "webhooks": webhooks})
        );
        return Ok(());
    }
    println!("{:<24} {:>10}  about", "node", "partitions");
    for (name, about) in &status.nodes {
        let owned = status
            .partitions
            .iter()
            .filter(|p| p.owner.as_deref() == Some(name))
            .count();
        println!("{name:<24} {owned:>10}  {about}");
    }
    println!();
    println!(
        "{:>9}  {:<24} {:>10} {:>10} {:>8}",
        "partition", "owner", "applied", "last", "lag"
    );
    for p in &status.partitions {
        println!(
            "{:>9}  {:<24} {:>10} {:>10} {:>8}",
            p.partition,
            p.owner.as_deref().unwrap_or("-"),
            p.applied,
            p.last,
            p.lag()
        );
    }
    if !status.webhooks.is_empty() {
        println!();
        println!("{:<24} delivered by", "webhook");
        for (name, node) in &status.webhooks {
            println!("{name:<24} {node}");
        }
    }
    let free = status
        .partitions
        .iter()
        .filter(|p| p.owner.is_none())
        .count();
    let lag: u64 = status.partitions.iter().map(|p| p.lag()).sum();
    println!(
        "{} nodes, {} partitions ({free} without an owner), {lag} batches not yet applied",
        status.nodes.len(),
        status.partitions.len()
    );
    Ok(())
}
