//! A node's part in the cluster. Two halves share one connection:
//!
//! - **front end**: [`Member::publish`] puts a batch of accepted pings on
//!   the log, split by partition, and returns once every part is stored
//!   on the stream's replicas; only then is the device told. A part whose
//!   publish fails is published again under the same message id, which the
//!   stream stores once, for as long as an election may last.
//! - **engine**: a supervisor task, every fifth of the lease time, writes
//!   the node's heartbeat, renews its leases (a failed renewal is a lost
//!   lease: the partition's driver stops and its vehicles are forgotten at
//!   once), and takes the free partitions this node should own (by highest
//!   random weight over the nodes alive, [`leases::preferred`]), handing
//!   over those another node alive should own. Each owned partition has a
//!   driver task: it loads the partition's checkpoint into the engine,
//!   reads the log from the sequence after it, offers each batch to the
//!   engine in order, and checkpoints now and then and when handing over.
//! - **commands**: [`Member::commands`] is the engine's command log (a
//!   dispatcher's command is appended to the log, see [`crate::commands`]);
//!   a follower task keeps the engine's registry on the log's commands, and
//!   each partition's driver reads the commands with the partition's pings
//!   and applies its vehicles' where the log puts them.
//!
//! The engine is the single node's, given only the partitions this node
//! owns: a vehicle's partition here is the engine's ([`partition_of`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use async_nats::jetstream::Context;
use futures_util::StreamExt;
use lastmile_engine::Ping;
use lastmile_engine::fleet::{Engine, PathPiece, VehicleId, partition_of};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::checkpoints::{Checkpoints, PartitionCheckpoint};
use crate::commands::{self, SharedCommands};
use crate::deliveries::Deliveries;
use crate::events::{self, Fence};
use crate::grants::Grants;
use crate::history::{HistoryConfig, PathLog, Writer};
use crate::learning::ClusterLearning;
use crate::leases::{self, Lease, Leases, RenewError};
use crate::ping_log::{LogConfig, PingLog};
use crate::publisher::Publisher;
use crate::queries::{self, OwnerQueries, Owners};
use crate::records;

/// How a node takes part.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The NATS servers, comma-separated (`nats://a:4222,nats://b:4222`).
    pub url: String,
    /// This node's name in the cluster (letters, digits, `-`, `_`), unique
    /// among the nodes alive.
    pub node: String,
    pub log: LogConfig,
    /// A partition whose owner stops renewing is free after this long.
    pub lease: Duration,
    /// How often an owner checkpoints a partition that moved on.
    pub checkpoint_every: Duration,
    /// How long a front end keeps publishing a batch the cluster does not
    /// acknowledge (an election takes 3 to 8 s) before refusing it.
    pub publish_patience: Duration,
    pub history: HistoryConfig,
}

impl ClusterConfig {
    pub fn new(url: &str, node: &str) -> Self {
        Self {
            url: url.into(),
            node: node.into(),
            log: LogConfig::default(),
            lease: Duration::from_secs(5),
            checkpoint_every: Duration::from_secs(30),
            publish_patience: Duration::from_secs(15),
            history: HistoryConfig::default(),
        }
    }
}

/// What a member counts (for `/metrics` and `lastmile cluster status`).
#[derive(Default)]
pub struct MemberStats {
    pub published_batches: AtomicU64,
    pub published_pings: AtomicU64,
    /// Publishes tried again after no acknowledgement.
    pub publish_retries: AtomicU64,
    /// Batches refused to a device: not acknowledged within the patience.
    pub publish_failures: AtomicU64,
    /// Publishes the stream had already (a retry that had landed).
    pub publish_duplicates: AtomicU64,
    pub applied_batches: AtomicU64,
    pub applied_pings: AtomicU64,
    /// Stored batches that did not read back (skipped).
    pub bad_batches: AtomicU64,
    pub leases_taken: AtomicU64,
    pub leases_lost: AtomicU64,
    /// Renewals NATS did not answer (the partition kept for queries).
    pub leases_suspended: AtomicU64,
    pub handed_over: AtomicU64,
    pub checkpoints: AtomicU64,
    pub checkpoint_bytes: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    /// Partitions whose checkpoint could not be read (replayed from the log's start).
    pub checkpoints_unreadable: AtomicU64,
    pub heartbeat_failures: AtomicU64,
    /// Dispatchers' command units this node put on the log.
    pub commands_appended: AtomicU64,
    /// Appends refused because another node's command got in first (the
    /// command was checked again).
    pub command_conflicts: AtomicU64,
    /// Appends not acknowledged within the patience (refused to the caller).
    pub command_failures: AtomicU64,
    /// Command units this node's registry read from the log.
    pub commands_recorded: AtomicU64,
    /// Queries for another node's vehicle asked of its owner.
    pub remote_queries: AtomicU64,
    /// Of those, unanswered in time.
    pub remote_query_failures: AtomicU64,
    /// Events this node put on the event stream.
    pub events_published: AtomicU64,
    /// Events published again that the stream had (a new owner's replay).
    pub events_duplicate: AtomicU64,
    /// Events of a partition whose lease was not certainly held (NATS slow,
    /// the node frozen, the partition lost): not published; whoever drives
    /// it next from its checkpoint emits them again.
    pub events_fenced: AtomicU64,
    /// Events not published: the relay fell behind the engine's outbox, or
    /// the stream did not acknowledge within the patience (the partition is
    /// then driven again from its checkpoint).
    pub events_lost: AtomicU64,
    /// Events read from the stream for this node's subscribers.
    pub events_received: AtomicU64,
    pub events_unreadable: AtomicU64,
    /// Traffic observations this node shared with the others, took from
    /// them, and dropped (a queue or an inbox full, a message unreadable).
    pub learn_shared: AtomicU64,
    pub learn_received: AtomicU64,
    pub learn_dropped: AtomicU64,
    /// Partitions driven again from their checkpoint after their events
    /// were dropped (a lease uncertain for a while).
    pub replays: AtomicU64,
    /// Webhook endpoints this node took to deliver, handed over to the
    /// node that should deliver them, and lost to another node.
    pub webhooks_taken: AtomicU64,
    pub webhooks_handed_over: AtomicU64,
    pub webhooks_lost: AtomicU64,
    /// Events the event stream dropped (its size bound) before a webhook
    /// endpoint this node delivers read them, and events it could not read.
    pub webhook_events_skipped: AtomicU64,
    pub webhook_events_unreadable: AtomicU64,
    /// Customers' tracking grants this node shared, took from the bucket
    /// (its own too), and could not read.
    pub grants_shared: AtomicU64,
    pub grants_received: AtomicU64,
    pub grants_unreadable: AtomicU64,
    /// History chunks and pieces this node wrote; pieces read back that a
    /// new owner had written again (left out); chunks that did not read
    /// back; pieces dropped unwritten (the stream refusing for long);
    /// writes that left pieces for the next.
    pub history_chunks: AtomicU64,
    pub history_pieces: AtomicU64,
    pub history_pieces_repeated: AtomicU64,
    pub history_unreadable: AtomicU64,
    pub history_pieces_lost: AtomicU64,
    pub history_flush_failures: AtomicU64,
    /// Pieces of a partition whose lease was not certainly held: not
    /// written (whoever drives it next from its checkpoint writes them).
    pub history_pieces_fenced: AtomicU64,
}

/// Renewals in flight at once.
const RENEWALS_AT_ONCE: usize = 32;
/// Partitions a node hands over at once at most (each waits for its
/// final checkpoint, off the supervisor's rounds).
const HANDOVERS_AT_ONCE: usize = 4;

/// A partition this node drives.
struct Owned {
    lease: Lease,
    task: JoinHandle<()>,
    /// Ask the driver to stop; `true`: checkpoint first (a hand-over).
    stop: Option<oneshot::Sender<bool>>,
    progress: Arc<Progress>,
}

/// A driver's position in its partition's log.
#[derive(Default)]
struct Progress {
    /// The last sequence offered to the engine.
    applied: AtomicU64,
    /// Batches stored after it.
    lag: AtomicU64,
}

/// A partition as [`Member::status`] tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStatus {
    pub partition: u32,
    /// Its owner, if any holds it.
    pub owner: Option<String>,
    /// The last sequence the owner applied, as it last said.
    pub applied: u64,
    /// The partition's newest sequence.
    pub last: u64,
}

impl PartitionStatus {
    /// Batches stored but not yet applied by the owner (as of its last
    /// renewal: up to a second behind).
    pub fn lag(&self) -> u64 {
        self.last.saturating_sub(self.applied)
    }
}

/// The cluster at one look.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Nodes alive, with what each says of itself.
    pub nodes: Vec<(String, String)>,
    pub partitions: Vec<PartitionStatus>,
    /// Webhook endpoints being delivered, and by which node.
    pub webhooks: Vec<(String, String)>,
}

impl Status {
    /// Reads the cluster's state at `url` without joining it.
    pub async fn fetch(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let js = crate::connect(url, timeout).await?;
        // Right after a server's loss the cluster elects new leaders (3 to
        // 8 s): requests fail meanwhile, and are tried again that long.
        let patience = Instant::now() + Duration::from_secs(15).max(timeout);
        loop {
            let partitions = match PingLog::existing_partitions(&js).await {
                Ok(Some(p)) => p,
                Ok(None) => bail!("no lastmile node has run on this NATS cluster yet"),
                Err(e) if Instant::now() > patience => return Err(e),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            };
            let read = async {
                let leases = Leases::observe(&js).await?;
                let config = LogConfig {
                    partitions,
                    ..LogConfig::default()
                };
                let log = PingLog::open(&js, &config).await?;
                status(&leases, &log).await
            };
            match read.await {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() > patience => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }
}

async fn status(leases: &Leases, log: &PingLog) -> anyhow::Result<Status> {
    let view = leases.view().await?;
    let last = futures_util::stream::iter(0..log.partitions())
        .map(|p| log.last_sequence(p))
        .buffered(16)
        .collect::<Vec<_>>()
        .await;
    let mut partitions = Vec::with_capacity(last.len());
    for (p, last) in last.into_iter().enumerate() {
        let holder = view.holders.iter().find(|h| h.partition == p as u32);
        partitions.push(PartitionStatus {
            partition: p as u32,
            owner: holder.map(|h| h.node.clone()),
            applied: holder.map_or(0, |h| h.applied),
            last: last?,
        });
    }
    let webhooks = view
        .claims
        .iter()
        .filter_map(|(k, node)| Some((k.strip_prefix("webhook.")?.to_owned(), node.clone())))
        .collect();
    Ok(Status {
        nodes: view.nodes,
        partitions,
        webhooks,
    })
}

/// A node of the cluster.
pub struct Member {
    config: ClusterConfig,
    log: PingLog,
    leases: Leases,
    checkpoints: Checkpoints,
    engine: Arc<Engine>,
    publisher: Publisher,
    owned: Mutex<HashMap<u32, Owned>>,
    /// Partitions whose renewal NATS did not answer: driven no more, their
    /// vehicles kept for queries.
    suspended: Mutex<std::collections::HashSet<u32>>,
    /// Hand-overs under way.
    handing: AtomicU64,
    /// When each partition was last seen free and not this node's to take.
    free_since: Mutex<HashMap<u32, Instant>>,
    pub stats: Arc<MemberStats>,
    observe: Observer,
    commands: Arc<SharedCommands>,
    /// Keeps the registry on the log's commands.
    follower: JoinHandle<()>,
    /// Each partition's owner at the supervisor's last look.
    owners: Owners,
    remote: Arc<OwnerQueries>,
    /// The partitions whose events this node may publish now.
    fence: Arc<Fence>,
    /// The engine's outbox position below which every event is relayed.
    relayed: Arc<AtomicU64>,
    learning: Arc<ClusterLearning>,
    deliveries: Arc<Deliveries>,
    grants: Grants,
    paths: PathLog,
    /// Writes the owned partitions' history.
    history: Arc<Writer>,
    /// The runtime the connection lives on, for callers off it.
    runtime: tokio::runtime::Handle,
    /// Background tasks: answering other nodes' queries, relaying events
    /// out and in.
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.follower.abort();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Told the newest time of each batch applied.
pub type Observer = Box<dyn Fn(f64) + Send + Sync>;

impl Member {
    /// Joins the cluster at `config.url` with `engine` (configured with the
    /// log's partition count): refused at once if the cluster does not
    /// answer, or runs another partition count. The supervisor starts on
    /// the current tokio runtime; `about` is what the heartbeat tells of
    /// this node (its addresses). `observe` is told the time of every ping
    /// this node's engine applies, so the node's event-time clock (its
    /// ticks: offline checks, traffic) follows the partitions it drives,
    /// whichever node's front end took their pings.
    pub async fn join(
        config: ClusterConfig,
        engine: Arc<Engine>,
        about: String,
        observe: Observer,
    ) -> anyhow::Result<Arc<Self>> {
        let partitions = config.log.partitions;
        if !engine.config().relay_events {
            bail!("a cluster node's engine relays its events (FleetConfig::relay_events)");
        }
        if engine.partition_count() != partitions as usize {
            bail!(
                "the engine has {} partitions, the cluster {partitions}",
                engine.partition_count()
            );
        }
        let js = crate::connect(&config.url, config.log.connect_timeout).await?;
        // A NATS cluster that has just started answers before it can make
        // replicated streams (its JetStream leader elected, its peers
        // known): the opening is tried again for a while.
        let within = config.log.connect_timeout * 4;
        let mut member = crate::retrying("opening the cluster's streams", within, || {
            Self::open(&js, config.clone(), engine.clone())
        })
        .await?;
        member.observe = observe;
        let member = Arc::new(member);
        member.leases.beat(&about).await?;
        tokio::spawn(supervise(member.clone(), about));
        Ok(member)
    }

    async fn open(
        js: &Context,
        config: ClusterConfig,
        engine: Arc<Engine>,
    ) -> anyhow::Result<Self> {
        let replicas = config.log.replicas;
        let log = PingLog::open(js, &config.log).await?;
        let leases = Leases::open(js, &config.node, config.lease, replicas).await?;
        let checkpoints = Checkpoints::open(js, engine.graph().fingerprint(), replicas).await?;
        // Everything that can fail comes before any task starts, so a
        // failed opening can be tried again.
        events::open(js, replicas, config.log.max_bytes).await?;
        let stats = Arc::new(MemberStats::default());
        let deliveries = Arc::new(
            Deliveries::open(js, leases.clone(), config.lease, replicas, stats.clone()).await?,
        );
        let grants = Grants::open(js, replicas, stats.clone()).await?;
        let paths = PathLog::open(js, replicas, &config.history, stats.clone()).await?;
        // Tells this process's message ids from an earlier one's of the
        // same node name.
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let publisher = Publisher::start(
            log.clone(),
            format!("{}-{boot:x}", config.node),
            config.publish_patience,
            stats.clone(),
        );
        let commands = Arc::new(SharedCommands::new(
            log.clone(),
            tokio::runtime::Handle::current(),
            format!("{}-{boot:x}", config.node),
            config.publish_patience,
            stats.clone(),
        ));
        let follower = tokio::spawn(commands::follow(
            log.clone(),
            checkpoints.clone(),
            engine.clone(),
            stats.clone(),
        ));
        let owners = Owners::default();
        let remote = Arc::new(OwnerQueries::new(
            js.client(),
            config.node.clone(),
            config.log.partitions as usize,
            owners.clone(),
            stats.clone(),
        ));
        let fence = Arc::new(Fence::default());
        let history = Arc::new(Writer::new(paths.clone(), engine.clone(), fence.clone()));
        let relayed = Arc::new(AtomicU64::new(0));
        let (learning, learning_tasks) = ClusterLearning::start(
            js.client(),
            config.node.clone(),
            engine.config().max_observations_per_tick,
            stats.clone(),
        );
        let mut tasks = vec![
            tokio::spawn(queries::answer(
                js.client(),
                config.node.clone(),
                engine.clone(),
                history.clone(),
            )),
            tokio::spawn(events::relay_out(
                js.clone(),
                engine.clone(),
                fence.clone(),
                relayed.clone(),
                config.publish_patience,
                stats.clone(),
            )),
            tokio::spawn(events::relay_in(js.clone(), engine.clone(), stats.clone())),
        ];
        tasks.extend(learning_tasks);
        Ok(Self {
            config,
            log,
            leases,
            checkpoints,
            engine,
            publisher,
            owned: Mutex::default(),
            suspended: Mutex::default(),
            handing: AtomicU64::new(0),
            free_since: Mutex::default(),
            stats,
            observe: Box::new(|_| {}),
            commands,
            follower,
            owners,
            remote,
            fence,
            relayed,
            learning,
            deliveries,
            grants,
            paths,
            history,
            runtime: tokio::runtime::Handle::current(),
            tasks,
        })
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Where the engine asks for vehicles other nodes drive (for
    /// [`Engine::set_remote_vehicles`]).
    pub fn remote_vehicles(&self) -> Arc<OwnerQueries> {
        self.remote.clone()
    }

    /// Where the engine swaps what it learns with the other nodes' (for
    /// [`Engine::set_learning_exchange`]).
    pub fn learning(&self) -> Arc<ClusterLearning> {
        self.learning.clone()
    }

    /// Where webhook endpoints are claimed and their places kept.
    pub fn deliveries(&self) -> Arc<Deliveries> {
        self.deliveries.clone()
    }

    /// Customers' tracking grants, shared by every node.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// `vehicle`'s matched path pieces overlapping `[from, to]` (event
    /// time, s), after its predecessor, at most `max` into `out` (`true`:
    /// more remain), from the history stream. The vehicle's owner (this
    /// node, or asked by request) writes its newest pieces first, so the
    /// answer reaches the finalised path's end; if the owner does not
    /// answer in time, it is up to a checkpoint interval behind that.
    /// Blocks the calling thread for the round trips (see
    /// [`crate::block_on`]).
    pub fn history(
        &self,
        vehicle: VehicleId,
        window: (f64, f64),
        max: usize,
        out: &mut Vec<PathPiece>,
    ) -> anyhow::Result<bool> {
        let p = partition_of(vehicle, self.engine.partition_count()) as u32;
        let ours = self.lock_owned().contains_key(&p);
        crate::block_on(&self.runtime, async {
            if ours {
                self.history.flush(p).await;
            } else {
                self.remote.flush_history(p).await;
            }
            self.paths.read(vehicle, window, max, out).await
        })
    }

    /// Writes late-matched pieces (one vehicle's, in time order: a
    /// phone's offline buffer) into the history; blocks like
    /// [`Self::history`].
    pub fn insert_history(&self, pieces: Vec<PathPiece>) -> anyhow::Result<()> {
        crate::block_on(&self.runtime, async {
            let mut pieces = pieces;
            self.paths.append(&mut pieces).await;
            if pieces.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("the history stream did not take {} pieces", pieces.len())
            }
        })
    }

    /// The engine's command log on the cluster (for
    /// [`Engine::set_command_log`]).
    pub fn commands(&self) -> Arc<SharedCommands> {
        self.commands.clone()
    }

    /// Partitions this node drives now.
    pub fn owned(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.lock_owned().keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Batches stored but not yet offered, over the partitions this node drives.
    pub fn lag(&self) -> u64 {
        self.lock_owned()
            .values()
            .map(|o| o.progress.lag.load(Relaxed))
            .sum()
    }

    pub async fn status(&self) -> anyhow::Result<Status> {
        status(&self.leases, &self.log).await
    }

    fn lock_owned(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Owned>> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `pings` on the log and returns once all of them are stored
    /// (replicated). An error means some may be stored and some not: the
    /// device sends the batch again, and a ping the engine had already is
    /// dropped there as a duplicate.
    pub async fn publish(&self, pings: &[(VehicleId, Ping)]) -> anyhow::Result<usize> {
        self.publisher.publish(pings).await
    }

    /// Stops driving every partition, checkpointing each and giving its
    /// lease up, and lets go of its webhook endpoints (a clean shutdown:
    /// the others take over at once).
    pub async fn leave(&self) {
        let owned: Vec<Owned> = self.lock_owned().drain().map(|(_, o)| o).collect();
        for o in owned {
            self.hand_over(o).await;
        }
        // And those a round started.
        let deadline = Instant::now() + self.config.publish_patience;
        while self.handing.load(Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.deliveries.let_go().await;
    }

    /// One driver stopped after a final checkpoint, its lease given up.
    async fn hand_over(&self, mut o: Owned) {
        tracing::info!(partition = o.lease.partition, "partition handed over");
        // Its last events go out with its final checkpoint, before the
        // lease does.
        if let Some(stop) = o.stop.take() {
            let _ = stop.send(true);
        }
        let _ = (&mut o.task).await;
        self.fence.revoke(o.lease.partition);
        self.leases.release(o.lease).await;
        let engine = self.engine.clone();
        let p = o.lease.partition as usize;
        let _ = tokio::task::spawn_blocking(move || engine.release_partition(p)).await;
        self.stats.handed_over.fetch_add(1, Relaxed);
    }

    /// A renewal NATS did not answer: the driver stops where it is (it
    /// could not read on anyway), and the vehicles stay for queries, as
    /// they were at the last batch applied, until the partition is taken
    /// again by this node or is seen held by another.
    async fn suspend(&self, o: Owned) {
        self.fence.revoke(o.lease.partition);
        o.task.abort();
        let _ = o.task.await;
        self.lock_suspended().insert(o.lease.partition);
        self.stats.leases_suspended.fetch_add(1, Relaxed);
    }

    fn lock_suspended(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u32>> {
        self.suspended.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lease lost: the driver stops where it is, the vehicles go.
    async fn lose(&self, o: Owned) {
        self.fence.revoke(o.lease.partition);
        o.task.abort();
        let _ = o.task.await;
        let engine = self.engine.clone();
        let p = o.lease.partition as usize;
        let _ = tokio::task::spawn_blocking(move || engine.release_partition(p)).await;
        self.stats.leases_lost.fetch_add(1, Relaxed);
    }

    /// Drives a partition just taken with a request made at `asked`.
    fn start(self: &Arc<Self>, lease: Lease, asked: Instant) {
        self.lock_suspended().remove(&lease.partition);
        self.fence.cleanse(lease.partition);
        self.fence
            .grant(lease.partition, lease.epoch, asked, self.config.lease);
        tracing::info!(
            partition = lease.partition,
            epoch = lease.epoch,
            "partition taken"
        );
        let progress = Arc::new(Progress::default());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(drive(self.clone(), lease, progress.clone(), stopped));
        self.stats.leases_taken.fetch_add(1, Relaxed);
        self.lock_owned().insert(
            lease.partition,
            Owned {
                lease,
                task,
                stop: Some(stop),
                progress,
            },
        );
    }

    /// One round of the supervisor: heartbeat, renewals, then the
    /// partitions taken and handed over.
    async fn round(self: &Arc<Self>, about: &str) {
        let patience = self.config.lease / 2;
        let beat = tokio::time::timeout(patience, self.leases.beat(about))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer")));
        if beat.is_err() {
            self.stats.heartbeat_failures.fetch_add(1, Relaxed);
        }
        // Renewals: a driver that ended on its own (an error) is let go too.
        let asked = Instant::now();
        let mine: Vec<(u32, Lease, u64, bool)> = self
            .lock_owned()
            .iter()
            .map(|(&p, o)| {
                (
                    p,
                    o.lease,
                    o.progress.applied.load(Relaxed),
                    o.task.is_finished(),
                )
            })
            .collect();
        // All at once: one at a time, a node of many partitions on a slow
        // link would take longer than a lease to renew them.
        let renewals = futures_util::stream::iter(mine)
            .map(|(p, mut lease, applied, finished)| async move {
                let renewed = if finished {
                    Err(RenewError::Taken)
                } else {
                    // Bounded well inside the lease: a NATS without quorum
                    // holds a request for seconds.
                    let patience = self.config.lease / 2;
                    tokio::time::timeout(patience, self.leases.renew(&mut lease, applied))
                        .await
                        .unwrap_or_else(|_| Err(RenewError::Unreachable("no answer".into())))
                };
                (p, lease, finished, renewed)
            })
            .buffer_unordered(RENEWALS_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        for (p, lease, finished, renewed) in renewals {
            let Some(o) = self.lock_owned().remove(&p) else {
                continue;
            };
            match renewed {
                Ok(()) if self.fence.is_tainted(p) => {
                    // It dropped events (its lease was uncertain a while):
                    // driven again from its checkpoint, which precedes them.
                    tracing::info!(partition = p, "partition replayed from its checkpoint");
                    self.fence.grant(p, lease.epoch, asked, self.config.lease);
                    o.task.abort();
                    let _ = o.task.await;
                    self.stats.replays.fetch_add(1, Relaxed);
                    self.start(lease, asked);
                }
                Ok(()) => {
                    self.fence.grant(p, lease.epoch, asked, self.config.lease);
                    self.lock_owned().insert(p, Owned { lease, ..o });
                }
                Err(RenewError::Unreachable(e)) => {
                    tracing::warn!(partition = p, error = %e, "partition suspended: NATS does not answer");
                    self.suspend(o).await;
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "partition lost");
                    if finished {
                        self.leases.release(o.lease).await;
                    }
                    self.lose(o).await;
                }
            }
        }
        if beat.is_err() {
            // Unsure whether the others see this node: take nothing and
            // hand nothing over until they do.
            return;
        }
        let Ok(Ok(view)) = tokio::time::timeout(patience, self.leases.view()).await else {
            return;
        };
        *self.owners.lock().unwrap_or_else(|p| p.into_inner()) = view
            .holders
            .iter()
            .map(|h| (h.partition, h.node.clone()))
            .collect();
        // Suspended partitions another node took meanwhile go; the others
        // stay (answering queries) until taken again below.
        let suspended: Vec<u32> = self.lock_suspended().iter().copied().collect();
        for p in suspended {
            let holder = view.holders.iter().find(|h| h.partition == p);
            if holder.is_some_and(|h| h.node != self.leases.node()) {
                self.lock_suspended().remove(&p);
                let engine = self.engine.clone();
                let _ =
                    tokio::task::spawn_blocking(move || engine.release_partition(p as usize)).await;
                self.stats.leases_lost.fetch_add(1, Relaxed);
            }
        }
        let nodes: Vec<String> = view.nodes.iter().map(|(n, _)| n.clone()).collect();
        if !nodes.iter().any(|n| n == self.leases.node()) {
            return;
        }
        let me = self.leases.node();
        for p in 0..self.config.log.partitions {
            let preferred = leases::preferred(p, &nodes);
            let holder = view.holders.iter().find(|h| h.partition == p);
            let owned_here = self.lock_owned().contains_key(&p);
            if owned_here {
                // A few hand-overs at once, each on its own task: one
                // waits for a checkpoint (seconds for a big partition), and
                // the rounds renewing the other leases go on meanwhile.
                // The lease stays this node's until the hand-over gives it
                // up, so no round takes the partition back meanwhile.
                if preferred != Some(me)
                    && holder.is_some_and(|h| h.node == me)
                    && self.handing.load(Relaxed) < HANDOVERS_AT_ONCE as u64
                    && let Some(o) = self.lock_owned().remove(&p)
                {
                    self.handing.fetch_add(1, Relaxed);
                    let member = self.clone();
                    tokio::spawn(async move {
                        member.hand_over(o).await;
                        member.handing.fetch_sub(1, Relaxed);
                    });
                }
                continue;
            }
            if holder.is_some() {
                self.lock_free_since().remove(&p);
                continue;
            }
            // Free: the preferred node takes it; any node does once it has
            // stayed free for three lease times (the preferred one cannot).
            let since = *self.lock_free_since().entry(p).or_insert_with(Instant::now);
            let orphaned = since.elapsed() > 3 * self.config.lease;
            if !(preferred == Some(me) || orphaned) {
                continue;
            }
            let asked = Instant::now();
            if let Ok(Some(lease)) = self.leases.acquire(p, 0).await {
                self.lock_free_since().remove(&p);
                self.start(lease, asked);
            }
        }
    }

    fn lock_free_since(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Instant>> {
        self.free_since.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The supervisor: a round every fifth of the lease time, for as long as
/// the member exists.
async fn supervise(member: Arc<Member>, about: String) {
    let mut every = tokio::time::interval(member.config.lease / 5);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if Arc::strong_count(&member) == 1 {
            return;
        }
        member.round(&about).await;
    }
}

/// Drives one owned partition until stopped: the checkpoint in, then the
/// log from the sequence after it, checkpointing every so often.
async fn drive(
    member: Arc<Member>,
    lease: Lease,
    progress: Arc<Progress>,
    mut stop: oneshot::Receiver<bool>,
) {
    let p = lease.partition;
    let engine = member.engine.clone();
    let stats = &member.stats;
    // Whatever this node held of the partition before (a lease lost and
    // taken again) gives way to the checkpoint.
    let e = engine.clone();
    let _ = tokio::task::spawn_blocking(move || e.release_partition(p as usize)).await;
    member.history.forget(p).await;
    let from = match member.checkpoints.get(p).await {
        Ok(Some(ckpt)) => {
            let e = engine.clone();
            let adopted =
                tokio::task::spawn_blocking(move || e.adopt_partition(ckpt.records)).await;
            match adopted {
                Ok(Ok(_)) => ckpt.sequence,
                _ => {
                    stats.checkpoints_unreadable.fetch_add(1, Relaxed);
                    0
                }
            }
        }
        Ok(None) => 0,
        Err(_) => {
            stats.checkpoints_unreadable.fetch_add(1, Relaxed);
            0
        }
    };
    progress.applied.store(from, Relaxed);
    let Ok(batches) = member.log.read(p, from + 1).await else {
        return;
    };
    let mut batches = std::pin::pin!(batches);
    let mut saved_at = from;
    let mut every = tokio::time::interval(member.config.checkpoint_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    let (mut pings, mut refused) = (Vec::new(), Vec::new());
    loop {
        tokio::select! {
            batch = batches.next() => {
                let Some(Ok(batch)) = batch else { return };
                if batch.commands {
                    apply_commands(&engine, p, &batch.bytes).await;
                    progress.applied.store(batch.sequence, Relaxed);
                    continue;
                }
                pings.clear();
                match records::decode(&batch.bytes, &mut pings) {
                    Ok(_) => {
                        offer(&engine, &mut pings, &mut refused).await;
                        stats.applied_batches.fetch_add(1, Relaxed);
                        stats.applied_pings.fetch_add(pings.len() as u64, Relaxed);
                        let newest = pings.iter().map(|(_, p)| p.time).fold(f64::NAN, f64::max);
                        (member.observe)(newest);
                    }
                    Err(_) => {
                        stats.bad_batches.fetch_add(1, Relaxed);
                    }
                }
                progress.applied.store(batch.sequence, Relaxed);
                progress.lag.store(batch.pending, Relaxed);
            }
            _ = every.tick() => {
                let applied = progress.applied.load(Relaxed);
                if applied > saved_at && checkpoint(&member, lease, applied).await {
                    saved_at = applied;
                }
            }
            handing_over = &mut stop => {
                if handing_over == Ok(true) {
                    checkpoint(&member, lease, progress.applied.load(Relaxed)).await;
                }
                return;
            }
        }
    }
}

/// Hands pings to the engine, waiting while its queues are full.
async fn offer(
    engine: &Arc<Engine>,
    pings: &mut [(VehicleId, Ping)],
    refused: &mut Vec<(VehicleId, Ping)>,
) {
    refused.clear();
    engine.offer(pings, refused);
    while !refused.is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let again = std::mem::take(refused);
        engine.offer(&again, refused);
    }
}

/// Hands partition `p`'s vehicle commands of a unit to the engine, in the
/// order of the log, waiting while a queue is full. A unit that does not
/// read back is skipped (the registry's follower counts it).
async fn apply_commands(engine: &Arc<Engine>, p: u32, bytes: &[u8]) {
    let Ok(unit) = commands::decode(bytes) else {
        return;
    };
    let partitions = engine.partition_count();
    for cmd in &unit.commands {
        let ours = cmd
            .vehicle()
            .is_some_and(|v| partition_of(v, partitions) == p as usize);
        if !ours {
            continue;
        }
        while !engine.offer_command(cmd, unit.time) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// The partition's vehicles as of sequence `applied`, to the object store.
async fn checkpoint(member: &Arc<Member>, lease: Lease, applied: u64) -> bool {
    let engine = member.engine.clone();
    let p = lease.partition as usize;
    let Ok(save) = tokio::task::spawn_blocking(move || engine.save_partition(p)).await else {
        return false;
    };
    // So must the history: the save's is in the engine's hands now.
    if !member.history.flush(lease.partition).await {
        member.stats.checkpoint_failures.fetch_add(1, Relaxed);
        return false;
    }
    // The events of what the checkpoint holds must be on the stream first:
    // the next owner replays only what comes after it.
    let upto = member.engine.emitted().next_id();
    let relayed =
        events::relayed_up_to(&member.relayed, upto, member.config.publish_patience).await;
    if !relayed || member.fence.is_tainted(lease.partition) {
        member.stats.checkpoint_failures.fetch_add(1, Relaxed);
        return false;
    }
    let ckpt = PartitionCheckpoint {
        sequence: applied,
        epoch: lease.epoch,
        records: save.records,
    };
    // The registry goes with partition 0's: one node writes it at a time.
    if lease.partition == 0 {
        let e = member.engine.clone();
        if let Ok((sequence, records)) =
            tokio::task::spawn_blocking(move || e.save_registry()).await
        {
            let registry = PartitionCheckpoint {
                sequence,
                epoch: lease.epoch,
                records,
            };
            if member.checkpoints.put_registry(&registry).await.is_err() {
                member.stats.checkpoint_failures.fetch_add(1, Relaxed);
            }
        }
    }
    match member.checkpoints.put(lease.partition, &ckpt).await {
        Ok(bytes) => {
            member.stats.checkpoints.fetch_add(1, Relaxed);
            member
                .stats
                .checkpoint_bytes
                .fetch_add(bytes as u64, Relaxed);
            true
        }
        Err(_) => {
            member.stats.checkpoint_failures.fetch_add(1, Relaxed);
            false
        }
    }
}
