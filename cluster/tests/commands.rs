//! Dispatchers' commands on two nodes at once, ordered by the cluster's
//! log: when both nodes add the same stop at the same moment exactly one
//! is accepted and the other refused as a duplicate, every accepted
//! command is on both nodes' registries in the same state, and a stop
//! moved between vehicles of different partitions through one node is
//! moved on the other. A node that starts after the log has dropped those
//! commands (its byte limit) has them from the registry saved with
//! partition 0's checkpoint.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lastmile_cluster::Member;
use lastmile_cluster::checkpoints::Checkpoints;
use lastmile_engine::Ping;
use lastmile_engine::fleet::{Admission, Command, CommandError, Engine, FleetConfig, StopPlan};
use lastmile_roadgraph::{CityParams, Graph, synthetic};

const PARTITIONS: u32 = 8;
const STOPS: u64 = 40;
const VEHICLES: u64 = 6;
/// The log's byte limit: small, so that pings push the commands out.
const LOG_BYTES: i64 = 256 << 10;

async fn node(url: &str, name: &str, graph: &Arc<Graph>) -> (Arc<Engine>, Arc<Member>) {
    let config = FleetConfig {
        shards: 1,
        partitions: PARTITIONS as usize,
        learning: false,
        ..FleetConfig::default()
    };
    common::join(url, name, graph, config, LOG_BYTES).await
}

/// Every stop's id, owner and plan as `engine`'s registry holds it.
fn registry(engine: &Engine) -> Vec<Option<(u64, StopPlan)>> {
    (0..STOPS)
        .map(|s| engine.stop(s).map(|v| (v.record.vehicle, v.record.plan)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_adding_the_same_stops_at_once_agree_on_one_owner_each() {
    if !common::available() {
        return;
    }
    let nats = common::Nats::start("commands");
    let url = nats.url();
    let graph = Arc::new(Graph::from_data(&synthetic::generate_city(
        &CityParams::new(2_000, 5),
    )));
    let (a, _ma) = node(&url, "a", &graph).await;
    let (b, _mb) = node(&url, "b", &graph).await;

    // Both nodes add every stop, each to a vehicle of its own choosing,
    // in opposite orders, at once.
    let add = |engine: Arc<Engine>, offset: u64, reverse: bool| {
        let graph = graph.clone();
        tokio::task::spawn_blocking(move || {
            let mut order: Vec<u64> = (0..STOPS).collect();
            if reverse {
                order.reverse();
            }
            order
                .into_iter()
                .map(|s| {
                    let pos = graph.node_pos((s * 7) as u32 % graph.num_nodes() as u32);
                    let cmd = Command::AddStop {
                        vehicle: (s + offset) % VEHICLES,
                        stop: StopPlan::new(s, pos),
                        index: None,
                    };
                    let wait = Admission::Wait(Duration::from_secs(5));
                    (s, engine.command(cmd, 1_767_225_600.0, wait))
                })
                .collect::<Vec<_>>()
        })
    };
    let (got_a, got_b) = tokio::join!(add(a.clone(), 0, false), add(b.clone(), 1, true));
    let (got_a, got_b) = (got_a.unwrap(), got_b.unwrap());
    let mut accepted = 0;
    for (s, r) in got_a.iter().chain(&got_b) {
        match r {
            Ok(()) => accepted += 1,
            Err(CommandError::DuplicateStop(d)) => assert_eq!(d, s),
            Err(e) => panic!("stop {s}: {e}"),
        }
    }
    assert_eq!(accepted, STOPS, "each stop accepted on exactly one node");

    // A stop moved through b to a vehicle of another partition.
    let moved = 5;
    let to = (0..VEHICLES)
        .find(|v| {
            let now = a.stop(moved).unwrap().record.vehicle;
            lastmile_engine::fleet::partition_of(*v, PARTITIONS as usize)
                != lastmile_engine::fleet::partition_of(now, PARTITIONS as usize)
        })
        .unwrap();
    let b2 = b.clone();
    tokio::task::spawn_blocking(move || b2.reassign(moved, to, None, 1_767_225_700.0))
        .await
        .unwrap()
        .unwrap();

    // Both registries read the whole log and agree.
    let t = Instant::now();
    while a.log_position() != b.log_position() {
        assert!(t.elapsed() < Duration::from_secs(10), "a node fell behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ra, rb) = (registry(&a), registry(&b));
    assert!(ra.iter().all(Option::is_some), "every stop on a");
    assert_eq!(ra, rb, "both nodes hold the same stops");
    assert_eq!(ra[moved as usize].as_ref().unwrap().0, to);

    // The registry saved with partition 0's checkpoint catches up.
    let js = lastmile_cluster::connect(&url, Duration::from_secs(2))
        .await
        .unwrap();
    let saved = Checkpoints::open(&js, graph.fingerprint(), 3)
        .await
        .unwrap();
    let t = Instant::now();
    while saved.get_registry().await.unwrap().map(|c| c.sequence) != Some(a.log_position()) {
        let s = |m: &Member| {
            use std::sync::atomic::Ordering::Relaxed;
            let s = &m.stats;
            (
                s.checkpoints.load(Relaxed),
                s.checkpoint_failures.load(Relaxed),
                s.events_published.load(Relaxed),
                s.events_fenced.load(Relaxed),
                m.owned(),
            )
        };
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no registry saved: {:?} {:?}",
            s(&_ma),
            s(&_mb)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Pings through a until the log holds none of the commands.
    let mut stream = js
        .get_stream(lastmile_cluster::ping_log::STREAM)
        .await
        .unwrap();
    let pos = graph.node_pos(0);
    let mut time = 1_767_225_800.0;
    while stream.info().await.unwrap().state.first_sequence <= a.log_position() {
        let pings: Vec<(u64, Ping)> = (0..200)
            .map(|v| {
                time += 0.01;
                (v, Ping::new(time, pos))
            })
            .collect();
        _ma.publish(&pings).await.unwrap();
    }
    // A node starting now has every stop all the same.
    let (c, _mc) = node(&url, "c", &graph).await;
    let t = Instant::now();
    while c.log_position() < a.log_position() {
        assert!(t.elapsed() < Duration::from_secs(10), "c did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(registry(&c), ra, "the new node holds the same stops");
}
