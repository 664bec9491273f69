//! Queries from any node: a node asked for a vehicle it does not drive
//! asks the vehicle's owner, by NATS request/reply on the owner's subject
//! `lastmile.node.<name>.vehicle`, and answers with the owner's snapshot.
//! The owner is the one the leases named at the supervisor's last look (a
//! fifth of a lease ago at most); an owner that has just handed the
//! partition over answers "not here", and the query says the vehicle is
//! unknown until the next look.
//!
//! Request: the vehicle id, u64 little-endian. Reply: empty (not held),
//! or a version byte (1) and the rkyv archive of the snapshot.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lastmile_engine::fleet::{Engine, RemoteVehicles, VehicleId, VehicleSnapshot, partition_of};
use rkyv::rancor;
use tokio::runtime::Handle;

use crate::member::MemberStats;

const VERSION: u8 = 1;
/// How long a query waits for the owner.
const PATIENCE: Duration = Duration::from_secs(2);

fn subject(node: &str) -> String {
    format!("lastmile.node.{node}.vehicle")
}

/// Each partition's owner as the leases said at the last look.
pub(crate) type Owners = Arc<Mutex<HashMap<u32, String>>>;

/// Answers other nodes' queries for the vehicles `engine` holds, for as
/// long as the subscription lasts.
pub(crate) async fn answer(client: async_nats::Client, node: String, engine: Arc<Engine>) {
    let Ok(mut requests) = client.subscribe(subject(&node)).await else {
        tracing::warn!("cannot answer other nodes' queries: the subscription was refused");
        return;
    };
    while let Some(req) = requests.next().await {
        let Some(reply) = req.reply else { continue };
        let id = <[u8; 8]>::try_from(req.payload.as_ref()).map(u64::from_le_bytes);
        let body = match id.ok().and_then(|id| engine.local_vehicle(id)) {
            Some(v) => encode(&v),
            None => Bytes::new(),
        };
        let _ = client.publish(reply, body).await;
    }
}

fn encode(v: &VehicleSnapshot) -> Bytes {
    match rkyv::to_bytes::<rancor::Error>(v) {
        Ok(archive) => {
            let mut out = Vec::with_capacity(archive.len() + 1);
            out.push(VERSION);
            out.extend_from_slice(&archive);
            Bytes::from(out)
        }
        Err(_) => Bytes::new(),
    }
}

fn decode(bytes: &[u8]) -> Option<VehicleSnapshot> {
    let (&VERSION, archive) = bytes.split_first()? else {
        return None;
    };
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(archive.len());
    aligned.extend_from_slice(archive);
    rkyv::from_bytes::<VehicleSnapshot, rancor::Error>(&aligned).ok()
}

/// The engine's [`RemoteVehicles`] on the cluster: asks the vehicle's
/// owner (blocking the caller for the round trip, see [`crate::block_on`]).
pub struct OwnerQueries {
    client: async_nats::Client,
    runtime: Handle,
    node: String,
    partitions: usize,
    owners: Owners,
    stats: Arc<MemberStats>,
}

impl OwnerQueries {
    pub(crate) fn new(
        client: async_nats::Client,
        node: String,
        partitions: usize,
        owners: Owners,
        stats: Arc<MemberStats>,
    ) -> Self {
        Self {
            client,
            runtime: Handle::current(),
            node,
            partitions,
            owners,
            stats,
        }
    }
}

impl RemoteVehicles for OwnerQueries {
    fn vehicle(&self, id: VehicleId) -> Option<VehicleSnapshot> {
        let p = partition_of(id, self.partitions) as u32;
        let owner = self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&p)
            .cloned()?;
        if owner == self.node {
            return None;
        }
        self.stats.remote_queries.fetch_add(1, Relaxed);
        let ask = self
            .client
            .request(subject(&owner), Bytes::copy_from_slice(&id.to_le_bytes()));
        let answer = crate::block_on(&self.runtime, tokio::time::timeout(PATIENCE, ask));
        match answer {
            Ok(Ok(msg)) => decode(&msg.payload),
            _ => {
                self.stats.remote_query_failures.fetch_add(1, Relaxed);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_and_garbage_is_none() {
        let mut v = VehicleSnapshot::new(42);
        v.odometer_m = 1234.5;
        v.next_stop = Some(7);
        let bytes = encode(&v);
        let back = decode(&bytes).unwrap();
        assert_eq!(
            (back.vehicle, back.odometer_m, back.next_stop),
            (42, 1234.5, Some(7))
        );
        assert_eq!(encode(&back), bytes);
        assert!(decode(&[]).is_none());
        assert!(decode(&bytes[..bytes.len() / 2]).is_none());
        assert!(decode(&[2, 0, 0]).is_none());
    }
}
