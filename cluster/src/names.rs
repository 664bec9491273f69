//! The fleets' names for their vehicles, stops and zones, shared by every
//! node: a key-value bucket, `LASTMILE_NAMES`, kept for good (no TTL).
//!
//! A node allocating an id for a new name must not collide with another
//! node doing the same, and two nodes meeting the same new name at once
//! must agree on one id. So, per (kind, fleet slot):
//!
//! - `next.<kind>.<slot>` counts the ids drawn, advanced by
//!   compare-and-swap (a node losing the race reads it again); a node
//!   draws a block of numbers at a time and hands them out itself, so a
//!   dispatcher planning a thousand stops costs a few swaps, not a
//!   thousand racing ones (blocks shrink near the fleet's limit, and a
//!   node's unused numbers are left unused when it stops);
//! - `name.<kind>.<slot>.<name in hex>` binds a name to its number, made
//!   with `create`: the first node to bind a name wins, the other reads the
//!   winner's number (its own drawn number stays unused);
//! - `label.<kind>.<slot>.<number>` names a number, for the nodes that see
//!   only the id (an owner labelling its events), written before the
//!   binding.
//!
//! The node composes the engine id from the number (see the node's `ids`).
//! Lookups of names another node bound are read from the bucket, then
//! cached by the node.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::Context;
use async_nats::jetstream::kv::{self, CreateErrorKind, Store};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, StorageType};
use bytes::Bytes;

pub const BUCKET: &str = "LASTMILE_NAMES";
/// Compare-and-swap attempts on a counter before giving up (each lost race
/// is another node's allocation going through).
const CAS_ATTEMPTS: usize = 64;
/// Each call gives up after this long (the cluster in election, or gone).
const PATIENCE: Duration = Duration::from_secs(10);

/// Numbers a node draws at once (fewer near the limit).
const BLOCK: u64 = 64;

/// Numbers drawn and not handed out yet, per (kind, slot).
type Blocks = HashMap<(u8, u32), Range<u64>>;

#[derive(Clone)]
pub struct Names {
    kv: Store,
    /// The numbers this node drew and has not handed out yet, per (kind,
    /// slot); held across a draw, so this node's draws queue rather than
    /// race each other.
    blocks: std::sync::Arc<tokio::sync::Mutex<Blocks>>,
}

fn name_key(kind: u8, slot: u32, name: &str) -> String {
    let mut key = format!("name.{kind}.{slot}.");
    for b in name.bytes() {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

fn label_key(kind: u8, slot: u32, n: u64) -> String {
    format!("label.{kind}.{slot}.{n}")
}

fn number(value: &[u8]) -> anyhow::Result<u64> {
    crate::decimal(value).context("a damaged entry in the names bucket")
}

impl Names {
    pub async fn open(js: &Context, replicas: usize) -> anyhow::Result<Self> {
        let kv = crate::bucket(
            js,
            kv::Config {
                bucket: BUCKET.into(),
                history: 1,
                storage: StorageType::File,
                num_replicas: replicas,
                ..kv::Config::default()
            },
        )
        .await?;
        Ok(Self {
            kv,
            blocks: Default::default(),
        })
    }

    /// The number `name` is bound to, if any node bound it.
    pub async fn lookup(&self, kind: u8, slot: u32, name: &str) -> anyhow::Result<Option<u64>> {
        let got = tokio::time::timeout(PATIENCE, self.read(&name_key(kind, slot, name)))
            .await
            .context("the names bucket did not answer")??;
        got.map(|v| number(&v)).transpose()
    }

    /// The name number `n` of (kind, slot) is bound to, if any.
    pub async fn label(&self, kind: u8, slot: u32, n: u64) -> anyhow::Result<Option<String>> {
        let got = tokio::time::timeout(PATIENCE, self.read(&label_key(kind, slot, n)))
            .await
            .context("the names bucket did not answer")??;
        Ok(got.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// A key's value. A read may be answered by any of the bucket's
    /// servers, and one a moment behind does not have a name bound
    /// milliseconds ago: a miss is asked again of the stream's leader,
    /// which has everything acknowledged (names are never deleted).
    ///
    /// A read that fails (a NATS server lost, its stream in election) is
    /// tried again until the caller's patience runs out: a name rendered
    /// as `#<id>` because an election was under way would reach a webhook
    /// receiver for good.
    async fn read(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        loop {
            match self.read_once(key).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "reading the names bucket: trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    async fn read_once(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        if let Some(v) = self.kv.get(key).await.context("reading the names bucket")? {
            return Ok(Some(v));
        }
        let subject = format!("{}{key}", self.kv.prefix);
        match self
            .kv
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(m) if !m.payload.is_empty() => Ok(Some(m.payload)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("reading the names bucket: {e}")),
        }
    }

    /// The number bound to `name`, binding the next free one if none is;
    /// `limit` bounds the numbers drawn in this (kind, slot) (`None`: all
    /// drawn).
    pub async fn bind(
        &self,
        kind: u8,
        slot: u32,
        name: &str,
        limit: u64,
    ) -> anyhow::Result<Option<u64>> {
        tokio::time::timeout(PATIENCE, self.bind_now(kind, slot, name, limit))
            .await
            .context("the names bucket did not answer")?
    }

    async fn bind_now(
        &self,
        kind: u8,
        slot: u32,
        name: &str,
        limit: u64,
    ) -> anyhow::Result<Option<u64>> {
        if let Some(n) = self.lookup(kind, slot, name).await? {
            return Ok(Some(n));
        }
        let Some(n) = self.draw(kind, slot, limit).await? else {
            return Ok(None);
        };
        // The number's label first: once the name is bound, it has one.
        self.kv
            .put(label_key(kind, slot, n), Bytes::from(name.to_owned()))
            .await
            .context("writing the names bucket")?;
        let key = name_key(kind, slot, name);
        match self.kv.create(&key, Bytes::from(n.to_string())).await {
            Ok(_) => Ok(Some(n)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                let theirs = self.read(&key).await?;
                number(&theirs.context("a name bound and gone")?).map(Some)
            }
            // The client checks a refused create against a read that a
            // replica a moment behind may answer ("wrong last sequence"
            // then comes back as another error): the name may be bound.
            Err(e) => match self.read(&key).await? {
                Some(theirs) => number(&theirs).map(Some),
                None => Err(anyhow::anyhow!("binding a name: {e}")),
            },
        }
    }

    /// The next number of (kind, slot), taken (`None`: `limit` reached).
    async fn draw(&self, kind: u8, slot: u32, limit: u64) -> anyhow::Result<Option<u64>> {
        let mut blocks = self.blocks.lock().await;
        let block = blocks.entry((kind, slot)).or_insert(0..0);
        if let Some(n) = block.next().filter(|&n| n < limit) {
            return Ok(Some(n));
        }
        let key = format!("next.{kind}.{slot}");
        for attempt in 0..CAS_ATTEMPTS {
            let entry = self
                .kv
                .entry(&key)
                .await
                .context("reading the names bucket")?;
            let (n, revision) = match &entry {
                Some(e) => (number(&e.value)?, e.revision),
                None => (0, 0),
            };
            if n >= limit {
                return Ok(None);
            }
            let take = ((limit - n) / 16).clamp(1, BLOCK);
            let next = Bytes::from((n + take).to_string());
            let won = if revision == 0 {
                self.kv.create(&key, next).await.is_ok()
            } else {
                self.kv.update(&key, next, revision).await.is_ok()
            };
            if won {
                *block = n + 1..n + take;
                return Ok(Some(n));
            }
            // Another node drew meanwhile: read again after a moment that
            // grows, so nodes racing fall out of step.
            let pause = Duration::from_micros(200 * (attempt as u64 + 1).min(20));
            tokio::time::sleep(pause).await;
        }
        bail!("too many nodes drawing names at once")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hold_any_name() {
        assert_eq!(name_key(1, 7, "van 1"), "name.1.7.76616e2031");
        // Dots, stars and non-ASCII are only hex digits in the key.
        let k = name_key(2, 0, "a.*>é");
        assert!(
            k["name.2.0.".len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit()),
            "{k}"
        );
    }
}
