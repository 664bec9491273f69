//! Webhook endpoints on the cluster: each is held by exactly one of the
//! nodes alive, spread over them, carried on by another when its node
//! leaves; and a deposed node's late write of an endpoint's place is
//! refused rather than moving it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lastmile_cluster::deliveries::SaveError;
use lastmile_engine::fleet::FleetConfig;
use lastmile_roadgraph::{CityParams, Graph, synthetic};

const ENDPOINTS: usize = 12;

/// Waits until every endpoint is held by exactly one of `held_by` (each
/// node's `holds`), and returns how many each holds.
async fn one_holder_each(names: &[String], nodes: &[&Arc<lastmile_cluster::Member>]) -> Vec<usize> {
    let t = Instant::now();
    loop {
        let holders: Vec<usize> = names
            .iter()
            .map(|n| nodes.iter().filter(|m| m.deliveries().holds(n)).count())
            .collect();
        if holders.iter().all(|&h| h == 1) {
            return nodes
                .iter()
                .map(|m| names.iter().filter(|n| m.deliveries().holds(n)).count())
                .collect();
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "holders per endpoint: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_endpoint_has_one_holder_and_a_deposed_one_cannot_move_its_place() {
    if !common::available() {
        return;
    }
    let nats = common::Nats::start("deliveries");
    let url = nats.url();
    let graph = Arc::new(Graph::from_data(&synthetic::generate_city(
        &CityParams::new(500, 4),
    )));
    let config = FleetConfig {
        shards: 1,
        partitions: 4,
        ..FleetConfig::default()
    };
    let names: Vec<String> = (0..ENDPOINTS).map(|i| format!("hook_{i}")).collect();
    let (_ea, a) = common::join(&url, "a", &graph, config.clone(), 64 << 20).await;
    let (_eb, b) = common::join(&url, "b", &graph, config, 64 << 20).await;
    a.deliveries().hold(names.clone());
    b.deliveries().hold(names.clone());

    // Spread over both nodes, one holder each.
    let counts = one_holder_each(&names, &[&a, &b]).await;
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");

    // A's endpoint: its place taken, moved on, then taken by b (as after
    // a's lease ran out while it was frozen): a's next write is refused.
    let name = names.iter().find(|n| a.deliveries().holds(n)).unwrap();
    let mut place = a.deliveries().take_place(name).await.unwrap();
    let start = place.next;
    a.deliveries()
        .save_place(name, &mut place, start + 5)
        .await
        .unwrap();
    let taken = b.deliveries().take_place(name).await.unwrap();
    assert_eq!(taken.next, start + 5, "b carries on where a stood");
    let late = a.deliveries().save_place(name, &mut place, start + 9).await;
    assert!(matches!(late, Err(SaveError::Deposed)), "{late:?}");
    let mut taken = taken;
    b.deliveries()
        .save_place(name, &mut taken, start + 7)
        .await
        .unwrap();
    assert_eq!(
        b.deliveries().take_place(name).await.unwrap().next,
        start + 7
    );

    // A leaves: b holds every endpoint.
    a.leave().await;
    drop(a);
    let counts = one_holder_each(&names, &[&b]).await;
    assert_eq!(counts, vec![ENDPOINTS]);
}
