//! The partitioned ping log: one JetStream stream, `LASTMILE_PINGS`, whose
//! subjects `lastmile.pings.<partition>` carry the device batches of each
//! partition in order, and whose subject `lastmile.commands` carries the
//! dispatchers' commands (see [`crate::commands`]): one stream, so each
//! command has one place among every partition's pings. A front end publishes a batch under an id of its
//! own (the device's connection and batch number) and tells the device it
//! has the batch only once the stream acknowledged it, stored on as many
//! servers as the stream has replicas; a retried publish of the same id
//! within the stream's duplicate window is stored once. An engine reads a
//! partition from any sequence on (the one after its checkpoint's), in
//! order.
//!
//! A stored batch is the payload the front end gave, opaque here.

use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config, DiscardPolicy, LastRawMessageErrorKind, StorageType};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// How long opening a partition's reader waits out a leader election.
const ELECTION_WAIT: Duration = Duration::from_secs(15);

/// The stream's name, and the subjects' prefix.
pub const STREAM: &str = "LASTMILE_PINGS";
/// The stream's metadata key for its partition count.
const PARTITIONS_KEY: &str = "lastmile.partitions";
const SUBJECT: &str = "lastmile.pings";
/// The subject of the dispatchers' commands.
pub const COMMANDS: &str = "lastmile.commands";

/// How the log is laid out and bounded.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Partitions (fixed for a fleet: a vehicle's partition is by its id).
    pub partitions: u32,
    /// Servers each batch is stored on before it is acknowledged (at most
    /// the cluster's size; 3 survives one server's loss).
    pub replicas: usize,
    /// A retried publish is recognised for this long.
    pub duplicate_window: Duration,
    /// Bytes the stream keeps at most; the oldest batches go first (an
    /// engine reads from its checkpoint, minutes back).
    pub max_bytes: i64,
    /// Giving up on reaching the cluster at start after this long.
    pub connect_timeout: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            partitions: 64,
            replicas: 3,
            duplicate_window: Duration::from_secs(120),
            max_bytes: 1 << 30,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A connection to the ping log.
#[derive(Clone)]
pub struct PingLog {
    js: Context,
    partitions: u32,
}

/// Where a publish stands once the stream answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The batch's sequence in the stream.
    pub sequence: u64,
    /// The stream had the batch already (a retry): stored once.
    pub duplicate: bool,
}

impl PingLog {
    /// Connects to the NATS cluster at `url` (comma-separated servers) and
    /// makes sure the stream exists as `config` says. A cluster that does
    /// not answer within the connect timeout is a clear error, not a wait.
    pub async fn connect(url: &str, config: &LogConfig) -> anyhow::Result<Self> {
        let js = crate::connect(url, config.connect_timeout).await?;
        Self::open(&js, config).await
    }

    /// The log on a connected cluster, the stream made as `config` says if
    /// it is not there yet.
    pub async fn open(js: &Context, config: &LogConfig) -> anyhow::Result<Self> {
        if config.partitions == 0 {
            bail!("the ping log needs at least one partition");
        }
        let partitions = config.partitions.to_string();
        let stream = Config {
            name: STREAM.into(),
            metadata: [(PARTITIONS_KEY.to_owned(), partitions.clone())].into(),
            subjects: vec![format!("{SUBJECT}.*"), COMMANDS.into()],
            num_replicas: config.replicas,
            duplicate_window: config.duplicate_window,
            max_bytes: config.max_bytes,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            ..Config::default()
        };
        let stream =
            tokio::time::timeout(config.connect_timeout * 4, js.get_or_create_stream(stream))
                .await
                .map_err(|_| anyhow::anyhow!("JetStream did not create {STREAM} in time"))?
                .with_context(|| format!("JetStream refused the stream {STREAM}"))?;
        // A vehicle's partition is by the count: nodes that disagree on it
        // would each drive vehicles the other does.
        let theirs = stream.cached_info().config.metadata.get(PARTITIONS_KEY);
        if theirs != Some(&partitions) {
            return Err(crate::Misconfigured(format!(
                "the cluster's log has {} partitions, this node is configured with {partitions}",
                theirs.map_or("an unknown number of", String::as_str)
            ))
            .into());
        }
        // A log made before commands went through it gains their subject.
        let mut theirs = stream.cached_info().config.clone();
        if !theirs.subjects.iter().any(|s| s == COMMANDS) {
            theirs.subjects.push(COMMANDS.into());
            js.update_stream(theirs)
                .await
                .with_context(|| format!("JetStream refused {COMMANDS} on {STREAM}"))?;
        }
        Ok(Self {
            js: js.clone(),
            partitions: config.partitions,
        })
    }

    /// The partition count of the cluster's log, as its first node made it
    /// (`None`: no lastmile node has made the log on this NATS cluster).
    pub async fn existing_partitions(js: &Context) -> anyhow::Result<Option<u32>> {
        match js.get_stream(STREAM).await {
            Ok(stream) => Ok(stream
                .cached_info()
                .config
                .metadata
                .get(PARTITIONS_KEY)
                .and_then(|p| p.parse().ok())),
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(e) => Err(anyhow::anyhow!("reading the stream {STREAM}: {e}")),
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Stores a batch of `partition` under `id` and returns once the stream
    /// acknowledged it (replicated). An error means it may or may not be
    /// stored: publish it again under the same id.
    pub async fn publish(&self, partition: u32, id: &str, batch: Bytes) -> anyhow::Result<Stored> {
        if partition >= self.partitions {
            bail!("partition {partition} of {}", self.partitions);
        }
        let subject = format!("{SUBJECT}.{partition}");
        let publish = PublishMessage::build().payload(batch).message_id(id);
        let ack = self
            .js
            .send_publish(subject, publish)
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::StreamNotFound => anyhow::anyhow!("the stream {STREAM} is gone"),
                _ => anyhow::anyhow!("publishing batch {id}: {e}"),
            })?
            .await
            .with_context(|| format!("batch {id} was not acknowledged"))?;
        Ok(Stored {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Appends a command unit under `id` if the log's last command is
    /// still at `after` (0: none yet); returns its sequence. A retry under
    /// the same id is answered with the first one's sequence.
    pub async fn append_command(
        &self,
        id: &str,
        unit: Bytes,
        after: u64,
    ) -> Result<u64, crate::commands::AppendError> {
        use crate::commands::AppendError;
        let publish = PublishMessage::build()
            .payload(unit)
            .message_id(id)
            .expected_last_subject_sequence(after);
        let ack = self
            .js
            .send_publish(COMMANDS, publish)
            .await
            .map_err(|e| AppendError::Failed(format!("appending command {id}: {e}")))?
            .await;
        match ack {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(AppendError::Moved),
            Err(e) => Err(AppendError::Failed(format!(
                "command {id} was not acknowledged: {e}"
            ))),
        }
    }

    /// The sequence of the log's newest command (0: none kept).
    pub async fn last_command(&self) -> anyhow::Result<u64> {
        self.last_of(COMMANDS).await
    }

    async fn open_reader(
        &self,
        subjects: &[String],
        from: u64,
    ) -> anyhow::Result<async_nats::jetstream::consumer::pull::Ordered> {
        let stream = self.js.get_stream(STREAM).await?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subjects: subjects.to_vec(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                max_expires: crate::READ_STALL,
                ..OrderedConfig::default()
            })
            .await?;
        Ok(consumer.messages().await?)
    }

    /// The batches of `partition` and the commands, from stream sequence
    /// `from` on, in the stream's order, then the new ones as they come.
    pub async fn read(
        &self,
        partition: u32,
        from: u64,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<Batch>> + Unpin + use<>> {
        let subjects = [format!("{SUBJECT}.{partition}"), COMMANDS.to_owned()];
        self.read_subjects(&subjects, from)
            .await
            .with_context(|| format!("reading partition {partition}"))
    }

    /// The commands alone from stream sequence `from` on, then the new ones.
    pub async fn read_commands(
        &self,
        from: u64,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<Batch>> + Unpin + use<>> {
        self.read_subjects(&[COMMANDS.to_owned()], from)
            .await
            .context("reading the commands")
    }

    async fn read_subjects(
        &self,
        subjects: &[String],
        from: u64,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<Batch>> + Unpin + use<>> {
        let messages = self.open_patiently(subjects, from).await?;
        let reader = Reader {
            log: self.clone(),
            subjects: subjects.to_vec(),
            next: from.max(1),
            messages: Some(messages),
        };
        Ok(Box::pin(futures_util::stream::unfold(
            reader,
            |mut r| async move {
                let batch = r.next_batch().await;
                Some((batch, r))
            },
        )))
    }

    /// A reader of `subjects` from `from` on; right after a server's loss
    /// the stream's leader may be in election (3 to 8 s on loopback):
    /// opening is retried that long.
    async fn open_patiently(
        &self,
        subjects: &[String],
        from: u64,
    ) -> anyhow::Result<async_nats::jetstream::consumer::pull::Ordered> {
        let started = tokio::time::Instant::now();
        loop {
            match self.open_reader(subjects, from).await {
                Ok(m) => return Ok(m),
                Err(_) if started.elapsed() < ELECTION_WAIT => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the stream holds a message of `subjects` at `from` or after.
    async fn holds_from(&self, subjects: &[String], from: u64) -> bool {
        for s in subjects {
            if self.last_of(s).await.is_ok_and(|last| last >= from) {
                return true;
            }
        }
        false
    }

    /// The sequence of `partition`'s newest batch (0: none yet).
    pub async fn last_sequence(&self, partition: u32) -> anyhow::Result<u64> {
        self.last_of(&format!("{SUBJECT}.{partition}")).await
    }

    async fn last_of(&self, subject: &str) -> anyhow::Result<u64> {
        let stream = self.js.get_stream_no_info(STREAM).await?;
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(anyhow::anyhow!("the last message of {subject}: {e}")),
        }
    }
}

/// Reads a partition's subjects in order, opening its consumer again when
/// it stalls. An ordered consumer whose pull died with a NATS server (the
/// connection moved to another) may wait tens of seconds before it
/// notices; the reader does not wait for it: after [`crate::READ_STALL`]
/// without a message while the stream holds newer ones, it reads on from
/// the sequence after the last it got with a new consumer.
struct Reader {
    log: PingLog,
    subjects: Vec<String>,
    /// The sequence after the last one read.
    next: u64,
    messages: Option<async_nats::jetstream::consumer::pull::Ordered>,
}

impl Reader {
    async fn next_batch(&mut self) -> anyhow::Result<Batch> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                match self.log.open_reader(&self.subjects, self.next).await {
                    Ok(m) => self.messages = Some(m),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
                continue;
            };
            match tokio::time::timeout(crate::READ_STALL, messages.next()).await {
                Ok(Some(Ok(m))) => {
                    let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
                    self.next = info.stream_sequence + 1;
                    return Ok(Batch {
                        sequence: info.stream_sequence,
                        pending: info.pending,
                        commands: m.subject.as_str() == COMMANDS,
                        bytes: m.payload.clone(),
                    });
                }
                // Broken: read on with a new consumer.
                Ok(Some(Err(_)) | None) => {
                    self.messages = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => {
                    if self.log.holds_from(&self.subjects, self.next).await {
                        tracing::debug!(next = self.next, "a stalled reader opened again");
                        self.messages = None;
                    }
                }
            }
        }
    }
}

/// A stored batch as a reader gets it.
#[derive(Clone, Debug)]
pub struct Batch {
    pub sequence: u64,
    /// Batches of the partition after this one, stored already: the
    /// reader's lag.
    pub pending: u64,
    /// A command unit (see [`crate::commands`]) rather than pings.
    pub commands: bool,
    pub bytes: Bytes,
}
