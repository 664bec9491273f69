//! Partition checkpoints in the JetStream object store
//! (`LASTMILE_CHECKPOINTS`, one object `partition-<p>` each): a partition's
//! vehicles as the engine saves them alone, with the last stream sequence
//! they include. The owner writes one every so often; whoever owns the
//! partition next loads it and reads the log from the sequence after.
//! Beside them, the object `registry`: the stops, routes and zones as of a
//! command's sequence, written with partition 0's checkpoints, for a node
//! that starts after the log dropped its oldest commands.
//!
//! An engine's output is a function of the log (pings in order, time from
//! the pings), so any checkpoint read back whole is a valid starting
//! point, whoever wrote it: a deposed owner writing late can only make the
//! next owner replay a little more. What a checkpoint must be is whole and
//! of this graph; the header says:
//!
//! ```text
//! b"LMPC" | u8 version (1) | u64 graph fingerprint | u64 sequence | u64 epoch | records
//! ```

use anyhow::{Context as _, bail};
use async_nats::jetstream::object_store::{self, GetErrorKind, ObjectStore};
use async_nats::jetstream::{Context, stream::StorageType};
use tokio::io::AsyncReadExt;

pub const BUCKET: &str = "LASTMILE_CHECKPOINTS";
const MAGIC: &[u8; 4] = b"LMPC";
const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 3 * 8;

/// A partition's checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionCheckpoint {
    /// The last stream sequence its vehicles include (0: none).
    pub sequence: u64,
    /// The lease epoch of the owner that wrote it.
    pub epoch: u64,
    /// The engine's records ([`lastmile_engine::fleet::PartitionSave`]).
    pub records: Vec<u8>,
}

#[derive(Clone)]
pub struct Checkpoints {
    store: ObjectStore,
    graph: u64,
}

/// The registry's object.
const REGISTRY: &str = "registry";

fn name(partition: u32) -> String {
    format!("partition-{partition}")
}

impl Checkpoints {
    /// The bucket (made if missing) for a cluster on the graph of
    /// fingerprint `graph`.
    pub async fn open(js: &Context, graph: u64, replicas: usize) -> anyhow::Result<Self> {
        let store = match js.get_object_store(BUCKET).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: BUCKET.into(),
                    storage: StorageType::File,
                    num_replicas: replicas,
                    ..object_store::Config::default()
                })
                .await
                .with_context(|| format!("JetStream refused the object store {BUCKET}"))?,
        };
        Ok(Self { store, graph })
    }

    pub async fn put(&self, partition: u32, ckpt: &PartitionCheckpoint) -> anyhow::Result<usize> {
        self.put_named(&name(partition), ckpt)
            .await
            .with_context(|| format!("writing partition {partition}'s checkpoint"))
    }

    /// The partition's checkpoint (`None`: there is none yet, start from
    /// the log's first sequence). One of another graph or version, or
    /// damaged, is an error: replaying the whole log would silently take
    /// long, so the operator is told.
    pub async fn get(&self, partition: u32) -> anyhow::Result<Option<PartitionCheckpoint>> {
        self.get_named(&name(partition))
            .await
            .with_context(|| format!("reading partition {partition}'s checkpoint"))
    }

    /// The registry (the engine's `save_registry`, `sequence` its command).
    pub async fn put_registry(&self, ckpt: &PartitionCheckpoint) -> anyhow::Result<usize> {
        self.put_named(REGISTRY, ckpt)
            .await
            .context("writing the registry")
    }

    pub async fn get_registry(&self) -> anyhow::Result<Option<PartitionCheckpoint>> {
        self.get_named(REGISTRY)
            .await
            .context("reading the registry")
    }

    async fn put_named(&self, name: &str, ckpt: &PartitionCheckpoint) -> anyhow::Result<usize> {
        let mut bytes = Vec::with_capacity(HEADER + ckpt.records.len());
        bytes.extend_from_slice(MAGIC);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.graph.to_le_bytes());
        bytes.extend_from_slice(&ckpt.sequence.to_le_bytes());
        bytes.extend_from_slice(&ckpt.epoch.to_le_bytes());
        bytes.extend_from_slice(&ckpt.records);
        let n = bytes.len();
        self.store.put(name, &mut bytes.as_slice()).await?;
        Ok(n)
    }

    async fn get_named(&self, name: &str) -> anyhow::Result<Option<PartitionCheckpoint>> {
        let mut object = match self.store.get(name).await {
            Ok(o) => o,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => bail!("{e}"),
        };
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await?;
        decode(&bytes, self.graph).map(Some)
    }
}

fn decode(bytes: &[u8], graph: u64) -> anyhow::Result<PartitionCheckpoint> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        bail!("not a partition checkpoint");
    }
    if bytes[4] != VERSION {
        bail!("a partition checkpoint of version {}", bytes[4]);
    }
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    if u64_at(5) != graph {
        bail!("a partition checkpoint of another graph");
    }
    Ok(PartitionCheckpoint {
        sequence: u64_at(13),
        epoch: u64_at(21),
        records: bytes[HEADER..].to_vec(),
    })
}
