//! This node as one of a cluster (`[cluster]` in the config, or
//! `lastmile serve --cluster nats://…`): its front ends' pings go on the
//! cluster's log and are acknowledged once replicated there; its engine
//! drives the partitions it owns (see `lastmile_cluster::member`); the
//! fleets' names are bound in the cluster's directory, shared by every
//! node, rather than in this node's store.
//!
//! This node's own store (its whole-engine checkpoints, journal, event
//! log and history) is not used: the cluster's log, checkpoints, event
//! and history streams hold the state instead.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use lastmile_cluster::history::HistoryConfig;
use lastmile_cluster::names::Names;
use lastmile_cluster::{ClusterConfig, LogConfig};
use serde::Deserialize;
use tokio::runtime::Handle;

use crate::ids::{Directory, IdError, Kind, slot_of_id};

/// `[cluster]`: off unless a URL is given (here or `--cluster`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// The NATS servers, comma-separated (`nats://10.0.0.1:4222,…`).
    pub url: Option<String>,
    /// This node's name, unique among the nodes (default: the host's name
    /// and the QUIC port).
    pub node: Option<String>,
    /// Partitions of the fleet, fixed for the cluster's life (every node
    /// must say the same; the first node to start makes the log with it).
    pub partitions: u32,
    /// Servers each ping batch is stored on before it is acknowledged.
    pub replicas: usize,
    /// A node that stops renewing loses its partitions after this long.
    pub lease_s: f64,
    /// How often an owner checkpoints a partition.
    pub checkpoint_every_s: f64,
    /// How long a ping batch may wait for the cluster (an election takes
    /// 3 to 8 s) before the device is told it was not taken.
    pub publish_patience_s: f64,
    /// Starting refuses after this long without an answer from NATS.
    pub connect_timeout_s: f64,
    /// Bytes the ping log keeps; the oldest batches go first.
    pub log_max_bytes: i64,
    /// Bytes the history stream keeps (per server holding it); the oldest
    /// chunks go first. Chunks older than `[store] history_retention_s`
    /// go too. An owner writes its vehicles' matched path there with each
    /// checkpoint (`checkpoint_every_s`).
    pub history_max_bytes: i64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        let log = LogConfig::default();
        Self {
            url: None,
            node: None,
            partitions: log.partitions,
            replicas: log.replicas,
            lease_s: 5.0,
            checkpoint_every_s: 30.0,
            publish_patience_s: 15.0,
            connect_timeout_s: log.connect_timeout.as_secs_f64(),
            log_max_bytes: log.max_bytes,
            history_max_bytes: HistoryConfig::default().max_bytes,
        }
    }
}

impl ClusterSection {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.url.is_none() {
            return Ok(());
        }
        if self.partitions == 0 || self.partitions as usize > lastmile_engine::fleet::MAX_PARTITIONS
        {
            bail!(
                "cluster.partitions must be within 1..={}",
                lastmile_engine::fleet::MAX_PARTITIONS
            );
        }
        if !(1..=5).contains(&self.replicas) {
            bail!("cluster.replicas must be within 1..=5 (JetStream's bound)");
        }
        let secs = [
            self.lease_s,
            self.checkpoint_every_s,
            self.publish_patience_s,
            self.connect_timeout_s,
        ];
        if secs
            .iter()
            .any(|s| !(s.is_finite() && *s >= 0.5 && *s <= 86_400.0))
        {
            bail!(
                "cluster: lease_s, checkpoint_every_s, publish_patience_s and connect_timeout_s must be within 0.5..=86400"
            );
        }
        if self.log_max_bytes < 1 << 20 || self.history_max_bytes < 1 << 20 {
            bail!("cluster.log_max_bytes and cluster.history_max_bytes must be at least 1 MiB");
        }
        Ok(())
    }

    /// The member's configuration (`None`: not clustered); history is
    /// kept `history_retention_s`.
    pub fn member_config(
        &self,
        default_node: &str,
        history_retention_s: f64,
    ) -> Option<ClusterConfig> {
        let url = self.url.as_ref()?;
        let node = self.node.clone().unwrap_or_else(|| default_node.to_owned());
        let mut c = ClusterConfig::new(url, &node);
        c.log = LogConfig {
            partitions: self.partitions,
            replicas: self.replicas,
            max_bytes: self.log_max_bytes,
            connect_timeout: Duration::from_secs_f64(self.connect_timeout_s),
            ..LogConfig::default()
        };
        c.lease = Duration::from_secs_f64(self.lease_s);
        c.checkpoint_every = Duration::from_secs_f64(self.checkpoint_every_s);
        c.publish_patience = Duration::from_secs_f64(self.publish_patience_s);
        c.history = HistoryConfig {
            retention: Duration::from_secs_f64(history_retention_s),
            max_bytes: self.history_max_bytes,
        };
        Some(c)
    }
}

/// The cluster's names bucket as this node's [`Directory`]. Its calls
/// block the calling thread for a round trip to NATS: a tokio worker
/// hands its other tasks on first (`block_in_place`), anything else waits
/// on the runtime the connection lives on.
pub struct SharedNames {
    names: Names,
    runtime: Handle,
}

impl SharedNames {
    /// Over the names bucket; `runtime` is the one the NATS connection runs on.
    pub fn new(names: Names, runtime: Handle) -> Arc<Self> {
        Arc::new(Self { names, runtime })
    }

    fn wait<T>(
        &self,
        f: impl std::future::Future<Output = anyhow::Result<T>> + Send,
    ) -> Result<T, IdError>
    where
        T: Send,
    {
        let done = lastmile_cluster::block_on(&self.runtime, f);
        done.map_err(|e| IdError::Unavailable(format!("{e:#}")))
    }
}

impl Directory for SharedNames {
    fn bind(&self, kind: Kind, slot: u32, name: &str, limit: u64) -> Result<u64, IdError> {
        self.wait(self.names.bind(kind as u8, slot, name, limit))?
            .ok_or(IdError::Full(kind))
    }

    fn lookup(&self, kind: Kind, slot: u32, name: &str) -> Result<Option<u64>, IdError> {
        self.wait(self.names.lookup(kind as u8, slot, name))
    }

    fn label(&self, kind: Kind, id: u64) -> Result<Option<String>, IdError> {
        let Some(slot) = slot_of_id(id) else {
            return Ok(None);
        };
        let n = id & ((1 << crate::ids::COUNTER_BITS) - 1);
        self.wait(self.names.label(kind as u8, slot, n))
    }
}
