//! The ping log on a real three-server NATS cluster (JetStream, three
//! replicas): a batch acknowledged is read back in its partition's order
//! even after a server is killed mid-stream; a retried publish is stored
//! once; an unreachable cluster is a clear error at once.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use lastmile_cluster::{LogConfig, PingLog};

fn config() -> LogConfig {
    LogConfig {
        partitions: 8,
        replicas: 3,
        connect_timeout: Duration::from_secs(2),
        max_bytes: 64 << 20,
        ..LogConfig::default()
    }
}

/// Connects once the cluster has elected its JetStream leader.
async fn connect(url: &str) -> PingLog {
    let t = Instant::now();
    loop {
        match PingLog::connect(url, &config()).await {
            Ok(log) => return log,
            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                eprintln!("waiting for the cluster: {e:#}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("the cluster never came up: {e:#}"),
        }
    }
}

/// Publishes until acknowledged, as a front end does for a device's batch.
async fn publish(log: &PingLog, partition: u32, id: &str, batch: Bytes) -> (u64, bool) {
    let t = Instant::now();
    loop {
        match log.publish(partition, id, batch.clone()).await {
            Ok(s) => return (s.sequence, s.duplicate),
            Err(e) => {
                assert!(t.elapsed() < Duration::from_secs(30), "batch {id}: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_survive_a_killed_server_and_retries_are_stored_once() {
    if !common::available() {
        return;
    }
    let mut nats = common::Nats::start("survive");
    let log = connect(&nats.url()).await;
    // (partition) -> acknowledged (sequence, batch number), in publish order.
    let mut acked: BTreeMap<u32, Vec<(u64, u32)>> = BTreeMap::new();
    for i in 0..600u32 {
        if i == 300 {
            // A server dies with the day half done: the stream's leader
            // may be on it; publishes wait out the election.
            nats.kill(0);
        }
        let partition = i % 8;
        let id = format!("conn-7/batch-{i}");
        let batch = Bytes::from(i.to_le_bytes().to_vec());
        let (sequence, duplicate) = publish(&log, partition, &id, batch.clone()).await;
        assert!(!duplicate || i >= 300, "batch {i} was new");
        acked.entry(partition).or_default().push((sequence, i));
        if i % 50 == 7 {
            // The device did not hear the ack and sends the batch again.
            let again = publish(&log, partition, &id, batch).await;
            assert_eq!(again, (sequence, true), "batch {i} stored once");
        }
    }
    for (&partition, want) in &acked {
        let mut read = log.read(partition, 1).await.unwrap();
        let mut got = Vec::new();
        while got.len() < want.len() {
            let next = tokio::time::timeout(Duration::from_secs(20), read.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("partition {partition}: {} of {}", got.len(), want.len())
                })
                .expect("the stream goes on")
                .unwrap();
            let n = u32::from_le_bytes(next.bytes[..4].try_into().unwrap());
            got.push((next.sequence, n));
        }
        assert_eq!(&got, want, "partition {partition}");
    }
    // From a later sequence on: only what follows it.
    let third = acked[&3][2].0;
    let mut read = log.read(3, third + 1).await.unwrap();
    let first = read.next().await.unwrap().unwrap();
    assert_eq!(first.sequence, acked[&3][3].0);
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_clear_error_at_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = Instant::now();
    let err = PingLog::connect(&format!("nats://127.0.0.1:{port}"), &config())
        .await
        .err()
        .expect("nothing listens there");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let message = format!("{err:#}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
}
