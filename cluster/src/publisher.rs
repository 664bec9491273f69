//! A node's pings onto the log, one writer per partition. Device batches
//! for a partition queue up while the partition's previous publish is in
//! flight and go out together as one stored batch (group commit): the log
//! then holds a few large batches rather than one small one per device
//! batch and partition, which is what a replicated stream pays for. A
//! publish that is not acknowledged is tried again under the same message
//! id, which the stream stores once, for as long as the patience allows;
//! every device batch in it then hears the one outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lastmile_engine::Ping;
use lastmile_engine::fleet::{VehicleId, partition_of};
use tokio::sync::{mpsc, oneshot};

use crate::member::MemberStats;
use crate::ping_log::PingLog;
use crate::records;

/// Device batches a partition's queue holds; past it, publishing waits.
const QUEUE: usize = 256;
/// One try's wait for an acknowledgement.
const TRY: Duration = Duration::from_secs(3);

/// A device batch's share of one partition, waiting for its outcome.
struct Pending {
    pings: Vec<(VehicleId, Ping)>,
    stored: oneshot::Sender<bool>,
}

pub(crate) struct Publisher {
    queues: Vec<mpsc::Sender<Pending>>,
}

/// What a partition's writer needs.
#[derive(Clone)]
struct Writer {
    log: PingLog,
    /// Message ids are `<prefix>-<partition>-<n>`: the node's name and
    /// this process's start, so no two writers ever share one.
    prefix: Arc<str>,
    patience: Duration,
    stats: Arc<MemberStats>,
}

impl Publisher {
    /// A writer task per partition of `log`, on the current runtime; they
    /// end when the publisher is dropped.
    pub fn start(
        log: PingLog,
        prefix: String,
        patience: Duration,
        stats: Arc<MemberStats>,
    ) -> Self {
        let writer = Writer {
            log,
            prefix: prefix.into(),
            patience,
            stats,
        };
        let queues = (0..writer.log.partitions())
            .map(|p| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(writer.clone().run(p, rx));
                tx
            })
            .collect();
        Self { queues }
    }

    /// Puts `pings` on the log; returns once every partition's share is
    /// stored (replicated). An error means some may be stored and some not.
    pub async fn publish(&self, pings: &[(VehicleId, Ping)]) -> anyhow::Result<usize> {
        let partitions = self.queues.len();
        let mut shares: Vec<Vec<(VehicleId, Ping)>> = vec![Vec::new(); partitions];
        for &(v, p) in pings {
            shares[partition_of(v, partitions)].push((v, p));
        }
        let mut outcomes = Vec::new();
        for (p, share) in shares.into_iter().enumerate() {
            for chunk in share.chunks(records::MAX_BATCH) {
                let (stored, outcome) = oneshot::channel();
                let pending = Pending {
                    pings: chunk.to_vec(),
                    stored,
                };
                if self.queues[p].send(pending).await.is_err() {
                    anyhow::bail!("the node is leaving the cluster");
                }
                outcomes.push(outcome);
            }
        }
        for outcome in outcomes {
            if outcome.await != Ok(true) {
                anyhow::bail!("the NATS cluster did not acknowledge the pings in time");
            }
        }
        Ok(pings.len())
    }
}

impl Writer {
    async fn run(self, partition: u32, mut queue: mpsc::Receiver<Pending>) {
        let mut n = 0u64;
        let mut carried: Option<Pending> = None;
        let mut pings = Vec::new();
        loop {
            let first = match carried.take() {
                Some(p) => p,
                None => match queue.recv().await {
                    Some(p) => p,
                    None => return,
                },
            };
            // Everything queued meanwhile goes with it, up to a batch.
            pings.clear();
            pings.extend_from_slice(&first.pings);
            let mut waiting = vec![first.stored];
            while let Ok(next) = queue.try_recv() {
                if pings.len() + next.pings.len() > records::MAX_BATCH {
                    carried = Some(next);
                    break;
                }
                pings.extend_from_slice(&next.pings);
                waiting.push(next.stored);
            }
            let id = format!("{}-{partition}-{n}", self.prefix);
            n += 1;
            let stored = self
                .publish(partition, &id, Bytes::from(records::encode(&pings)))
                .await;
            if stored {
                self.stats
                    .published_pings
                    .fetch_add(pings.len() as u64, Relaxed);
            }
            for w in waiting {
                let _ = w.send(stored);
            }
        }
    }

    /// One stored batch, tried again under the same id until acknowledged
    /// or out of patience.
    async fn publish(&self, partition: u32, id: &str, bytes: Bytes) -> bool {
        let deadline = Instant::now() + self.patience;
        let count = |c: &AtomicU64| c.fetch_add(1, Relaxed);
        loop {
            match tokio::time::timeout(TRY, self.log.publish(partition, id, bytes.clone())).await {
                Ok(Ok(stored)) => {
                    count(&self.stats.published_batches);
                    if stored.duplicate {
                        count(&self.stats.publish_duplicates);
                    }
                    return true;
                }
                _ if Instant::now() < deadline => {
                    count(&self.stats.publish_retries);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                _ => {
                    count(&self.stats.publish_failures);
                    return false;
                }
            }
        }
    }
}
