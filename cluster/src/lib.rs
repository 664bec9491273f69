//! lastmile on more than one machine, on NATS JetStream (issue 39), each
//! piece on the log rather than on a home-made protocol:
//!
//! - [`ping_log`]: the partitioned ping log front ends publish to and
//!   engines read from, a batch acknowledged once replicated;
//! - [`records`]: what a stored batch holds;
//! - [`commands`]: the dispatchers' commands on the same log, every
//!   node's registry following them;
//! - [`leases`]: which node owns which partition, fenced by revision;
//! - [`names`]: the fleets' names for their vehicles and stops, shared;
//! - [`checkpoints`]: each partition's vehicles with the last sequence they
//!   include, for whoever owns it next;
//! - [`events`]: the event log as a stream, each owner relaying its
//!   partitions' events and every node's subscribers reading them all;
//! - [`deliveries`]: which node delivers each webhook endpoint, and
//!   where in the event stream its delivery stands;
//! - [`grants`]: customers' tracking grants, so a link opens on any node;
//! - [`history`]: vehicles' matched paths, written by their partitions'
//!   owners and read from any node;
//! - [`learning`]: what each node's engine learns (traffic, ETA
//!   outcomes) swapped with the others at ticks;
//! - [`queries`]: a query for a vehicle another node drives, asked of
//!   its owner;
//! - [`member`]: a node's part in it all: publishing its front ends'
//!   pings (a writer per partition, `publisher`), and owning, driving,
//!   checkpointing and handing over partitions.

pub mod checkpoints;
pub mod commands;
pub mod deliveries;
pub mod events;
mod framed;
pub mod grants;
pub mod history;
pub mod learning;
pub mod leases;
pub mod member;
pub mod names;
pub mod ping_log;
mod publisher;
pub mod queries;
pub mod records;

use std::time::Duration;

/// How long a reader of a stream waits on one pull before asking again.
/// An ordered consumer notices that its pull died with a NATS server (its
/// connection moved to another) by two missed idle heartbeats, and the
/// client's heartbeat is half a pull's expiry: by default a pull lasts
/// 30 s and a partition's driver stood still for 30 s after such a loss.
/// With 2 s pulls it reads on within a few seconds, at the cost of one
/// pull request every 2 s per idle reader.
pub(crate) const READ_STALL: Duration = Duration::from_secs(2);

use anyhow::Context as _;
pub use member::{ClusterConfig, Member, MemberStats, Status};
pub use ping_log::{Batch, LogConfig, PingLog, Stored};

/// Connects to the NATS cluster at `url` (comma-separated servers): a
/// cluster that does not answer within `timeout` is a clear error at
/// once, not a wait.
pub async fn connect(
    url: &str,
    timeout: Duration,
) -> anyhow::Result<async_nats::jetstream::Context> {
    let servers = url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{url:?} is not a list of NATS servers"))?;
    // No echo: a node never needs its own plain messages back (what it
    // shares with the others at ticks is not for itself).
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(timeout)
        .no_echo()
        .name("lastmile");
    let client = tokio::time::timeout(timeout, async_nats::connect_with_options(servers, options))
        .await
        .map_err(|_| {
            anyhow::anyhow!("the NATS cluster at {url} did not answer within {timeout:?}")
        })?
        .with_context(|| format!("cannot reach the NATS cluster at {url}"))?;
    Ok(async_nats::jetstream::new(client))
}

/// A decimal number as a bucket's value holds it.
pub(crate) fn decimal(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The key-value bucket `config` names, made with `config` if it is not
/// there yet (a bucket's settings are the first node's).
pub(crate) async fn bucket(
    js: &async_nats::jetstream::Context,
    config: async_nats::jetstream::kv::Config,
) -> anyhow::Result<async_nats::jetstream::kv::Store> {
    if let Ok(kv) = js.get_key_value(&config.bucket).await {
        return Ok(kv);
    }
    let name = config.bucket.clone();
    js.create_key_value(config)
        .await
        .with_context(|| format!("JetStream refused the bucket {name}"))
}

/// Runs `f` on `runtime` (where the NATS connection lives) and waits for
/// it, from any thread: a tokio worker hands its other tasks on first
/// (`block_in_place`); a current-thread runtime cannot block in place, so
/// the call goes to a helper thread and this one waits.
pub fn block_on<T: Send>(runtime: &tokio::runtime::Handle, f: impl Future<Output = T> + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(f))
        }
        Ok(_) => std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(f))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        }),
        Err(_) => runtime.block_on(f),
    }
}

/// A node configured otherwise than the cluster it joins: refused at once,
/// not tried again.
#[derive(Debug)]
pub struct Misconfigured(pub String);

impl std::fmt::Display for Misconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Misconfigured {}

/// `f` until it succeeds, every quarter second for up to `within` (a NATS
/// cluster electing its leaders); its last error after that, or at once
/// a [`Misconfigured`] one.
pub async fn retrying<T, F, Fut>(what: &str, within: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() < within && e.downcast_ref::<Misconfigured>().is_none() => {
                tracing::debug!(error = %format!("{e:#}"), "{what}: trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
