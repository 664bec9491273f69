//! Customers' tracking grants, shared by every node: a tracking token
//! minted on one node (or sent in a webhook's milestone) must open its
//! stop's page on whichever node the customer's browser reaches.
//!
//! The bucket `LASTMILE_GRANTS` holds one key per grant, the token's
//! SHA-256 digest in hex (the token itself is never stored, as on a single
//! node), its value the grant: the issuer's fleet, the stop, the expiry.
//! A node writes a grant, acknowledged by the bucket, before it hands the
//! token out; every node follows the bucket from its start and adds each
//! grant to its own table ([`Grants::follow`]), so a link opens on another
//! node milliseconds after it was handed out. Keys expire after 31 days
//! (a grant lasts 30 at most).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::Context;
use async_nats::jetstream::kv::{self, Operation, Store};
use async_nats::jetstream::stream::StorageType;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use crate::framed;
use crate::member::MemberStats;

pub const BUCKET: &str = "LASTMILE_GRANTS";
/// How long the bucket keeps a grant: longer than the longest one lasts.
const KEEP: Duration = Duration::from_secs(31 * 86_400);
/// A write not acknowledged in this long is refused to the caller.
const PATIENCE: Duration = Duration::from_secs(10);

/// One grant as the bucket holds it.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Grant {
    /// SHA-256 of the token.
    pub digest: [u8; 32],
    /// The issuer's fleet by name; `None` for an admin's grant.
    pub fleet: Option<String>,
    pub stop: u64,
    /// Milliseconds since the epoch.
    pub expires_ms: i64,
}

fn key(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone)]
pub struct Grants {
    kv: Store,
    /// The runtime the NATS connection lives on ([`Grants::share`] is
    /// called from blocking threads).
    runtime: tokio::runtime::Handle,
    stats: Arc<MemberStats>,
}

impl Grants {
    /// The bucket, made if missing; calls made later run on the current
    /// runtime.
    pub(crate) async fn open(
        js: &Context,
        replicas: usize,
        stats: Arc<MemberStats>,
    ) -> anyhow::Result<Self> {
        let kv = crate::bucket(
            js,
            kv::Config {
                bucket: BUCKET.into(),
                history: 1,
                max_age: KEEP,
                storage: StorageType::File,
                num_replicas: replicas,
                ..kv::Config::default()
            },
        )
        .await?;
        Ok(Self {
            kv,
            runtime: tokio::runtime::Handle::current(),
            stats,
        })
    }

    /// Writes `grants`, waiting for the bucket to acknowledge each (from
    /// any thread: it blocks the caller).
    pub fn share(&self, grants: &[Grant]) -> anyhow::Result<()> {
        // All at once (a webhook batch's milestones at most, a few
        // hundred): they wait one round trip, not one each.
        let mut puts = Vec::with_capacity(grants.len());
        for g in grants {
            let value = Bytes::from(framed::encode(g).map_err(anyhow::Error::msg)?);
            let (kv, stats, key) = (self.kv.clone(), self.stats.clone(), key(&g.digest));
            puts.push(async move {
                kv.put(key, value)
                    .await
                    .context("writing the grants bucket")?;
                stats.grants_shared.fetch_add(1, Relaxed);
                anyhow::Ok(())
            });
        }
        let puts = futures_util::future::try_join_all(puts);
        crate::block_on(&self.runtime, async {
            tokio::time::timeout(PATIENCE, puts)
                .await
                .context("the grants bucket did not answer")?
                .map(drop)
        })
    }

    /// Hands `apply` every grant of the bucket, those written before and
    /// those to come, for as long as the task runs (it ends with the
    /// member's runtime, or when aborted). A watch that breaks (a NATS
    /// server lost) is opened again from the revision after the last one
    /// read.
    pub fn follow(&self, apply: impl Fn(Grant) + Send + 'static) -> JoinHandle<()> {
        let (kv, stats) = (self.kv.clone(), self.stats.clone());
        self.runtime.spawn(async move {
            let mut next = 0u64;
            loop {
                let watch = if next == 0 {
                    kv.watch_with_history(">").await
                } else {
                    kv.watch_all_from_revision(next).await
                };
                let Ok(mut entries) = watch else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                while let Some(Ok(e)) = entries.next().await {
                    next = e.revision + 1;
                    if e.operation != Operation::Put {
                        continue;
                    }
                    match framed::decode::<Grant>(&e.value) {
                        Ok(g) if key(&g.digest) == e.key => {
                            apply(g);
                            stats.grants_received.fetch_add(1, Relaxed);
                        }
                        _ => {
                            stats.grants_unreadable.fetch_add(1, Relaxed);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_reads_back_under_its_digest_and_garbage_does_not() {
        let g = Grant {
            digest: [7; 32],
            fleet: Some("acme".into()),
            stop: 42,
            expires_ms: 1_767_225_600_000,
        };
        let bytes = framed::encode(&g).unwrap();
        assert_eq!(framed::decode::<Grant>(&bytes).unwrap(), g);
        assert_eq!(key(&g.digest), "07".repeat(32));
        assert!(framed::decode::<Grant>(&bytes[..bytes.len() - 3]).is_err());
    }
}
