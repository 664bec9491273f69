//! What one node's engine learns reaches the others: vans driving only
//! in partitions node a owns teach node b's engine the traffic on their
//! roads at b's next tick, though b drives none of them.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lastmile_engine::bench::Day;
use lastmile_engine::fleet::{FleetConfig, partition_of};
use lastmile_engine::simulate::SimParams;
use lastmile_roadgraph::{CityParams, Graph, synthetic};

const PARTITIONS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nodes_traffic_is_learnt_by_the_others() {
    if !common::available() {
        return;
    }
    let nats = common::Nats::start("learning");
    let url = nats.url();
    let graph = Arc::new(Graph::from_data(&synthetic::generate_city(
        &CityParams::new(3_000, 9),
    )));
    let config = FleetConfig {
        shards: 1,
        partitions: PARTITIONS,
        ..FleetConfig::default()
    };
    let (a, ma) = common::join(&url, "a", &graph, config.clone(), 64 << 20).await;
    let (b, mb) = common::join(&url, "b", &graph, config, 64 << 20).await;
    let t = Instant::now();
    while ma.owned().len() + mb.owned().len() < PARTITIONS || mb.owned().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "partitions not shared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Half an hour of vans, those of a's partitions only, through a.
    let params = SimParams {
        vehicles: 30,
        duration_s: 1_800.0,
        interval_s: 5.0,
        seed: 3,
        ..SimParams::default()
    };
    let day = Day::simulate(&graph, &params, &|_| {});
    let mine = ma.owned();
    let pings: Vec<_> = day
        .pings
        .iter()
        .filter(|(v, _)| mine.contains(&(partition_of(*v, PARTITIONS) as u32)))
        .copied()
        .collect();
    assert!(!pings.is_empty());
    for chunk in pings.chunks(500) {
        ma.publish(chunk).await.unwrap();
    }
    let t = Instant::now();
    while ma.lag() > 0 || a.stats().shards.pings < pings.len() as u64 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "a did not drive the day"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.sync();
    let end = pings.iter().map(|(_, p)| p.time).fold(f64::MIN, f64::max);
    assert_eq!(b.stats().shards.pings, 0, "b drives none of them");

    // a's tick shares what it saw; b's next tick learns it.
    let (a2, b2) = (a.clone(), b.clone());
    tokio::task::spawn_blocking(move || a2.tick(end))
        .await
        .unwrap();
    assert!(a.stats().traffic_tracked > 0, "a learnt its own traffic");
    let t = Instant::now();
    while mb
        .stats
        .learn_received
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(t.elapsed() < Duration::from_secs(10), "nothing reached b");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::spawn_blocking(move || b2.tick(end))
        .await
        .unwrap();
    let (ta, tb) = (a.stats().traffic_tracked, b.stats().traffic_tracked);
    assert_eq!(tb, ta, "b tracks the traffic a saw");
}
