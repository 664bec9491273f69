//! Who owns which partition: leases in a JetStream key-value bucket,
//! `LASTMILE_LEASES`, whose keys expire a lease time after their last
//! write (the bucket's `max_age`).
//!
//! - `partition.<p>` holds the owner's node name and the last stream
//!   sequence it applied. A node takes a free partition with `create`
//!   (refused while another holds it) and renews it every second or so
//!   with `update` at the revision it last wrote: compare-and-swap, so a
//!   renewal fails once anybody else wrote the key. A failed renewal, for
//!   whatever reason (another owner, or the NATS cluster in election), is a
//!   lost lease: the node stops driving the partition at once. The
//!   revision at which a lease was taken is its **epoch**, increasing
//!   across owners: what an owner emits carries it, and the lower of two
//!   epochs is a deposed owner's.
//! - `node.<name>` is a node's heartbeat, written as often: the nodes
//!   alive are the keys present.
//! - `webhook.<name>`: which node delivers a webhook endpoint's events
//!   (see `deliveries`), a claim like a partition's.
//!
//! The bucket's TTL is fixed when it is made (the first node's lease time).

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, Store, UpdateErrorKind};
use async_nats::jetstream::{Context, stream::StorageType};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

pub const BUCKET: &str = "LASTMILE_LEASES";

/// A partition this node holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub partition: u32,
    /// The revision of this node's last write of the key.
    pub revision: u64,
    /// The revision at which the lease was taken.
    pub epoch: u64,
}

/// Why a renewal failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenewError {
    /// The key moved on: another node took the partition (or it expired).
    Taken,
    /// The bucket did not answer: whether another node took it is not known.
    Unreachable(String),
}

impl std::fmt::Display for RenewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Taken => f.write_str("another node holds it"),
            Self::Unreachable(e) => write!(f, "the leases did not answer: {e}"),
        }
    }
}

/// A partition's holder as the bucket says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub partition: u32,
    pub node: String,
    /// The last stream sequence the holder said it applied.
    pub applied: u64,
    pub revision: u64,
}

/// The cluster's nodes and partitions at one look.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Nodes alive: name and what the node says of itself.
    pub nodes: Vec<(String, String)>,
    pub holders: Vec<Holder>,
    /// Every other claim (`webhook.<name>`): its key and holder.
    pub claims: std::collections::BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct Leases {
    kv: Store,
    node: String,
}

fn key(partition: u32) -> String {
    format!("partition.{partition}")
}

fn value(node: &str, applied: u64) -> Bytes {
    Bytes::from(format!("{node} {applied}"))
}

impl Leases {
    /// The bucket, made with `ttl` and `replicas` if it is not there yet.
    pub async fn open(
        js: &Context,
        node: &str,
        ttl: Duration,
        replicas: usize,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !node.is_empty()
                && node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "a node's name is letters, digits, '-' and '_' ({node:?})"
        );
        let config = kv::Config {
            bucket: BUCKET.into(),
            history: 1,
            max_age: ttl,
            storage: StorageType::File,
            num_replicas: replicas,
            ..kv::Config::default()
        };
        let kv = crate::bucket(js, config).await?;
        Ok(Self {
            kv,
            node: node.into(),
        })
    }

    /// The bucket as it is, to look at (`lastmile cluster status`).
    pub async fn observe(js: &Context) -> anyhow::Result<Self> {
        let kv = js
            .get_key_value(BUCKET)
            .await
            .with_context(|| format!("no bucket {BUCKET}: no lastmile node has joined"))?;
        Ok(Self {
            kv,
            node: String::new(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Takes `partition` if nobody holds it (`None`: somebody does).
    pub async fn acquire(&self, partition: u32, applied: u64) -> anyhow::Result<Option<Lease>> {
        let taken = self
            .claim(&key(partition), value(&self.node, applied))
            .await
            .with_context(|| format!("taking partition {partition}"))?;
        Ok(taken.map(|revision| Lease {
            partition,
            revision,
            epoch: revision,
        }))
    }

    /// Renews a lease, saying the last sequence applied. Either error
    /// means the partition is not this node's to drive any more.
    pub async fn renew(&self, lease: &mut Lease, applied: u64) -> Result<(), RenewError> {
        lease.revision = self
            .renew_claim(
                &key(lease.partition),
                value(&self.node, applied),
                lease.revision,
            )
            .await?;
        Ok(())
    }

    /// Gives a partition up now (rather than at expiry), if still held.
    pub async fn release(&self, lease: Lease) {
        self.release_claim(&key(lease.partition), lease.revision)
            .await;
    }

    /// Takes the key `key` if nobody holds it: its revision (`None`:
    /// somebody does). Partitions' leases are such claims; so is the right
    /// to deliver a webhook endpoint's events.
    pub async fn claim(&self, key: &str, value: Bytes) -> anyhow::Result<Option<u64>> {
        match self.kv.create(key, value).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Renews a claim written at `revision`: the new revision.
    pub async fn renew_claim(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, RenewError> {
        match self.kv.update(key, value, revision).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Err(RenewError::Taken),
            Err(e) => Err(RenewError::Unreachable(e.to_string())),
        }
    }

    /// Gives a claim up now, if still held at `revision`.
    pub async fn release_claim(&self, key: &str, revision: u64) {
        let _ = self.kv.delete_expect_revision(key, Some(revision)).await;
    }

    /// This node's heartbeat, with what it says of itself (its addresses).
    pub async fn beat(&self, about: &str) -> anyhow::Result<()> {
        self.kv
            .put(format!("node.{}", self.node), Bytes::from(about.to_owned()))
            .await
            .context("heartbeat")?;
        Ok(())
    }

    /// The nodes alive and the partitions held, now.
    pub async fn view(&self) -> anyhow::Result<View> {
        let keys: Vec<String> = self.kv.keys().await?.try_collect().await?;
        let entries = futures_util::stream::iter(keys)
            .map(|k| async move { self.kv.entry(k).await })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?;
        let mut view = View::default();
        for e in entries.into_iter().flatten() {
            if e.operation != Operation::Put {
                continue;
            }
            let text = String::from_utf8_lossy(&e.value).into_owned();
            if let Some(name) = e.key.strip_prefix("node.") {
                view.nodes.push((name.to_owned(), text));
            } else if let Some(p) = e
                .key
                .strip_prefix("partition.")
                .and_then(|p| p.parse().ok())
            {
                let (node, applied) = text.split_once(' ').unwrap_or((&text, "0"));
                view.holders.push(Holder {
                    partition: p,
                    node: node.to_owned(),
                    applied: applied.parse().unwrap_or(0),
                    revision: e.revision,
                });
            } else {
                view.claims.insert(e.key, text);
            }
        }
        view.nodes.sort();
        view.holders.sort_by_key(|h| h.partition);
        Ok(view)
    }
}

/// The node that should own `partition` among `nodes` (highest random
/// weight): every node computes the same answer from the same list, and a
/// node joining or leaving moves only its share of partitions.
pub fn preferred(partition: u32, nodes: &[String]) -> Option<&str> {
    preferred_for(&partition.to_le_bytes(), nodes)
}

/// The node that should hold what `what` names among `nodes`, as for
/// partitions (a webhook endpoint, by its name).
pub fn preferred_for<'a>(what: &[u8], nodes: &'a [String]) -> Option<&'a str> {
    nodes
        .iter()
        .max_by_key(|n| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &b in n.as_bytes().iter().chain(what) {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            // A final mix: FNV alone leaves the bytes added last too
            // little room to spread.
            h ^= h >> 33;
            h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
            h ^ (h >> 33)
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_over_nodes_and_move_little() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let mut counts = [0; 3];
        for p in 0..300 {
            let n = preferred(p, &three).unwrap();
            counts[three.iter().position(|x| x == n).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| (70..=130).contains(&c)),
            "{counts:?}"
        );
        // A fourth node takes about a quarter; nothing moves between the others.
        let four: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let mut moved = 0;
        for p in 0..300 {
            let (before, after) = (preferred(p, &three).unwrap(), preferred(p, &four).unwrap());
            if before != after {
                assert_eq!(after, "d");
                moved += 1;
            }
        }
        assert!((50..=100).contains(&moved), "{moved}");
        assert_eq!(preferred(0, &[]), None);
    }
}
