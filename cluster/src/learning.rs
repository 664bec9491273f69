//! What the engines learn, swapped between nodes (see the engine's
//! [`LearningExchange`]): at every tick each node publishes its partitions'
//! traffic observations and ETA outcomes on the plain NATS subject
//! `lastmile.learn`, and learns at its next tick from what the others
//! published. Best effort, as the learning is: a node that is down or
//! behind misses some (counted), and a node that starts learns from then
//! on. Each message: a [`Shared`], framed (see `framed`; at most
//! [`CHUNK`] observations, well under NATS's payload limit).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use lastmile_engine::fleet::{LearningExchange, Outcome};
use lastmile_engine::traffic::EdgeObservation;
use tokio::sync::mpsc;

use crate::framed;
use crate::member::MemberStats;

const SUBJECT: &str = "lastmile.learn";
/// Observations (or outcomes) in one message at most.
pub const CHUNK: usize = 8192;
/// Messages waiting to be published at most (beyond: dropped, counted).
const QUEUE: usize = 64;

/// One node's learning of one tick, or a part of it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
pub struct Shared {
    pub node: String,
    pub observations: Vec<EdgeObservation>,
    pub outcomes: Vec<Outcome>,
}

/// The exchange on the cluster: [`LearningExchange::share`] queues for the
/// publisher task, the subscriber task fills what
/// [`LearningExchange::take`] hands the engine.
pub struct ClusterLearning {
    node: String,
    outbox: mpsc::Sender<Bytes>,
    inbox: Mutex<(Vec<EdgeObservation>, Vec<Outcome>)>,
    /// Observations held for the next tick at most (beyond: dropped).
    cap: usize,
    stats: Arc<MemberStats>,
}

impl ClusterLearning {
    /// The exchange, and its publisher and subscriber tasks (started on
    /// the current runtime; they end when the exchange is dropped).
    pub(crate) fn start(
        client: async_nats::Client,
        node: String,
        cap: usize,
        stats: Arc<MemberStats>,
    ) -> (Arc<Self>, Vec<tokio::task::JoinHandle<()>>) {
        let (outbox, mut queued) = mpsc::channel::<Bytes>(QUEUE);
        let me = Arc::new(Self {
            node,
            outbox,
            inbox: Mutex::default(),
            cap,
            stats,
        });
        let publisher = {
            let client = client.clone();
            tokio::spawn(async move {
                while let Some(msg) = queued.recv().await {
                    let _ = client.publish(SUBJECT, msg).await;
                }
            })
        };
        let weak = Arc::downgrade(&me);
        let subscriber = tokio::spawn(async move {
            let Ok(mut sub) = client.subscribe(SUBJECT).await else {
                return;
            };
            while let Some(msg) = sub.next().await {
                let Some(me) = weak.upgrade() else { return };
                me.receive(&msg.payload);
            }
        });
        (me, vec![publisher, subscriber])
    }

    fn receive(&self, payload: &[u8]) {
        let Ok(s) = framed::decode::<Shared>(payload) else {
            self.stats.learn_dropped.fetch_add(1, Relaxed);
            return;
        };
        if s.node == self.node {
            // Another connection of this node's name (the connection itself
            // gets no echo): a node restarted, its old self not gone yet.
            return;
        }
        let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        if inbox.0.len() + s.observations.len() > self.cap {
            self.stats
                .learn_dropped
                .fetch_add(s.observations.len() as u64, Relaxed);
            return;
        }
        self.stats
            .learn_received
            .fetch_add(s.observations.len() as u64, Relaxed);
        inbox.0.extend(s.observations);
        inbox.1.extend(s.outcomes);
    }
}

impl LearningExchange for ClusterLearning {
    fn share(&self, observations: &[EdgeObservation], outcomes: &[Outcome]) {
        let parts = observations.len().max(outcomes.len()).div_ceil(CHUNK);
        for i in 0..parts {
            let range = |n: usize| (i * CHUNK).min(n)..((i + 1) * CHUNK).min(n);
            let s = Shared {
                node: self.node.clone(),
                observations: observations[range(observations.len())].to_vec(),
                outcomes: outcomes[range(outcomes.len())].to_vec(),
            };
            let sent =
                framed::encode(&s).is_ok_and(|b| self.outbox.try_send(Bytes::from(b)).is_ok());
            let counter = if sent {
                &self.stats.learn_shared
            } else {
                &self.stats.learn_dropped
            };
            counter.fetch_add(s.observations.len() as u64, Relaxed);
        }
    }

    fn take(&self) -> (Vec<EdgeObservation>, Vec<Outcome>) {
        std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_reads_back_and_garbage_does_not() {
        let s = Shared {
            node: "a".into(),
            observations: vec![EdgeObservation {
                edge: 3,
                metres: 40.0,
                seconds: 5.0,
                time: 1_767_225_600.0,
            }],
            outcomes: Vec::new(),
        };
        let bytes = framed::encode(&s).unwrap();
        assert_eq!(framed::decode::<Shared>(&bytes), Ok(s));
        assert!(framed::decode::<Shared>(&bytes[..bytes.len() - 3]).is_err());
        assert!(framed::decode::<Shared>(&[]).is_err());
    }
}
