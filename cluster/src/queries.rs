//! Queries from any node: a node asked for a vehicle it does not drive
//! asks the vehicle's owner, by NATS request/reply on the owner's subject
//! `lastmile.node.<name>.query`, and answers with the owner's snapshot; a
//! spatial query ("nearest", "in a box") asks every other node at once and
//! merges their answers with its own. The owners are those the leases
//! named at the supervisor's last look (a fifth of a lease ago at most); an
//! owner that has just handed a partition over answers "not here", and the
//! query says the vehicle is unknown until the next look.
//!
//! Request: a kind byte, then little-endian arguments: 1 vehicle (u64 id),
//! 2 nearest (f64 lat, f64 lon, u32 k), 3 in a box (4 x f64), 4 write a
//! partition's history now (u32 partition: a history asked of another
//! node reaches the finalised path's end, as it does on the owner). Reply:
//! empty (not held, or a request not understood), the snapshot or the
//! vehicles found, framed (see `framed`), or for 4 one byte, 1 when
//! everything was written.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lastmile_engine::fleet::{Engine, RemoteVehicles, VehicleId, VehicleSnapshot, partition_of};
use lastmile_engine::live_index::Found;
use lastmile_roadgraph::LatLon;
use tokio::runtime::Handle;

use crate::framed;
use crate::history::Writer;
use crate::member::MemberStats;

/// How long a query waits for the other nodes.
const PATIENCE: Duration = Duration::from_secs(2);
/// Vehicles a node answers a spatial query with at most: one more than a
/// box query's answer holds, so the asker still sees it was cut.
const MAX_FOUND: usize = 10_001;

const VEHICLE: u8 = 1;
const NEAREST: u8 = 2;
const IN_BOX: u8 = 3;
const HISTORY: u8 = 4;

fn subject(node: &str) -> String {
    format!("lastmile.node.{node}.query")
}

/// Each partition's owner as the leases said at the last look.
pub(crate) type Owners = Arc<Mutex<HashMap<u32, String>>>;

/// Answers other nodes' queries about the vehicles `engine` holds (and
/// the history `history` writes), for as long as the subscription lasts.
pub(crate) async fn answer(
    client: async_nats::Client,
    node: String,
    engine: Arc<Engine>,
    history: Arc<Writer>,
) {
    let Ok(mut requests) = client.subscribe(subject(&node)).await else {
        tracing::warn!("cannot answer other nodes' queries: the subscription was refused");
        return;
    };
    while let Some(req) = requests.next().await {
        let Some(reply) = req.reply else { continue };
        if let (Some(&HISTORY), Some(p)) = (req.payload.first(), req.payload.get(1..5)) {
            let p = u32::from_le_bytes(p.try_into().expect("4 bytes"));
            // Off this loop: a write waits for the stream.
            let (client, history) = (client.clone(), history.clone());
            tokio::spawn(async move {
                let written = history.flush(p).await;
                let _ = client
                    .publish(reply, Bytes::from(vec![u8::from(written)]))
                    .await;
            });
            continue;
        }
        let e = engine.clone();
        let body = tokio::task::spawn_blocking(move || respond(&e, &req.payload))
            .await
            .unwrap_or_default();
        let _ = client.publish(reply, body).await;
    }
}

/// The answer to one request, from this engine's own vehicles.
fn respond(engine: &Engine, req: &[u8]) -> Bytes {
    let f64_at = |i: usize| {
        req.get(i..i + 8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    match (req.first(), req.len()) {
        (Some(&VEHICLE), 9) => {
            let id = u64::from_le_bytes(req[1..9].try_into().expect("8 bytes"));
            engine
                .local_vehicle(id)
                .map_or_else(Bytes::new, |v| encode(&v))
        }
        (Some(&NEAREST), 21) => {
            let (Some(lat), Some(lon)) = (f64_at(1), f64_at(9)) else {
                return Bytes::new();
            };
            let k = u32::from_le_bytes(req[17..21].try_into().expect("4 bytes")) as usize;
            let mut found = Vec::new();
            engine.local_nearest(LatLon::new(lat, lon), k.min(MAX_FOUND), &mut found);
            encode(&found)
        }
        (Some(&IN_BOX), 33) => {
            let b = [1, 9, 17, 25].map(|i| f64_at(i).unwrap_or(f64::NAN));
            let mut found = Vec::new();
            engine.local_in_box(b, &mut found);
            found.truncate(MAX_FOUND);
            encode(&found)
        }
        _ => Bytes::new(),
    }
}

fn encode<T>(v: &T) -> Bytes
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
{
    framed::encode(v).map_or_else(|_| Bytes::new(), Bytes::from)
}

fn decode_vehicle(bytes: &[u8]) -> Option<VehicleSnapshot> {
    framed::decode(bytes).ok()
}

fn decode_found(bytes: &[u8]) -> Option<Vec<Found>> {
    framed::decode(bytes).ok()
}

/// The engine's [`RemoteVehicles`] on the cluster: asks the other nodes
/// (blocking the caller for the round trip, see [`crate::block_on`]).
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

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<u32, String>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One request to `node`: its reply's payload, or `None` (counted)
    /// when it did not answer in time.
    async fn ask(&self, node: &str, req: Bytes) -> Option<Bytes> {
        self.stats.remote_queries.fetch_add(1, Relaxed);
        match tokio::time::timeout(PATIENCE, self.client.request(subject(node), req)).await {
            Ok(Ok(msg)) => Some(msg.payload),
            _ => {
                self.stats.remote_query_failures.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Asks partition `p`'s owner, when another node, to write the
    /// partition's history now; `true` once it did.
    pub(crate) async fn flush_history(&self, p: u32) -> bool {
        let Some(owner) = self.owners().get(&p).cloned() else {
            return false;
        };
        if owner == self.node {
            return false;
        }
        let mut req = vec![HISTORY];
        req.extend_from_slice(&p.to_le_bytes());
        self.ask(&owner, Bytes::from(req))
            .await
            .is_some_and(|r| r[..] == [1])
    }

    /// `req` to every other node owning a partition, their vehicles merged.
    fn ask_all(&self, req: Bytes) -> Vec<Found> {
        let mut others: Vec<String> = self
            .owners()
            .values()
            .filter(|n| **n != self.node)
            .cloned()
            .collect();
        others.sort_unstable();
        others.dedup();
        if others.is_empty() {
            return Vec::new();
        }
        let asks = others.iter().map(|n| self.ask(n, req.clone()));
        let replies = crate::block_on(&self.runtime, futures_util::future::join_all(asks));
        replies
            .into_iter()
            .flatten()
            .filter_map(|r| decode_found(&r))
            .flatten()
            .collect()
    }
}

impl RemoteVehicles for OwnerQueries {
    fn vehicle(&self, id: VehicleId) -> Option<VehicleSnapshot> {
        let p = partition_of(id, self.partitions) as u32;
        let owner = self.owners().get(&p).cloned()?;
        if owner == self.node {
            return None;
        }
        let mut req = vec![VEHICLE];
        req.extend_from_slice(&id.to_le_bytes());
        let reply = crate::block_on(&self.runtime, self.ask(&owner, Bytes::from(req)))?;
        decode_vehicle(&reply)
    }

    fn nearest(&self, p: LatLon, k: usize) -> Vec<Found> {
        let mut req = vec![NEAREST];
        req.extend_from_slice(&p.lat.to_le_bytes());
        req.extend_from_slice(&p.lon.to_le_bytes());
        req.extend_from_slice(&(k.min(MAX_FOUND) as u32).to_le_bytes());
        self.ask_all(Bytes::from(req))
    }

    fn in_box(&self, b: [f64; 4]) -> Vec<Found> {
        let mut req = vec![IN_BOX];
        for x in b {
            req.extend_from_slice(&x.to_le_bytes());
        }
        self.ask_all(Bytes::from(req))
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
        let back = decode_vehicle(&bytes).unwrap();
        assert_eq!(
            (back.vehicle, back.odometer_m, back.next_stop),
            (42, 1234.5, Some(7))
        );
        assert_eq!(encode(&back), bytes);
        assert!(decode_vehicle(&[]).is_none());
        assert!(decode_vehicle(&bytes[..bytes.len() / 2]).is_none());
        assert!(decode_vehicle(&[2, 0, 0]).is_none());
    }
}
