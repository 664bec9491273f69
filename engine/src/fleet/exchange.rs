//! What engines learn, shared: in a cluster each node's engine sees the
//! traffic and the arrivals of the partitions it drives only, so at every
//! tick it hands what its shards gathered to a [`LearningExchange`] and
//! takes what the other engines handed theirs, and learns from both. The
//! learnt traffic (and the metric it makes) and the ETA error
//! distributions are then the fleet's on every node, a tick or so behind
//! the engine that saw them.

use std::sync::Arc;

use super::Engine;
use super::window::Outcome;
use crate::traffic::EdgeObservation;

/// Where engines swap what they observed.
pub trait LearningExchange: Send + Sync {
    /// This engine's observations and outcomes of one tick, for the others
    /// (must not block: queue them).
    fn share(&self, observations: &[EdgeObservation], outcomes: &[Outcome]);

    /// What the other engines shared since the last call (bounded by the
    /// exchange).
    fn take(&self) -> (Vec<EdgeObservation>, Vec<Outcome>);
}

impl Engine {
    /// Learns from the other engines' observations through `exchange` from
    /// the next tick on (once; false if one was set already).
    pub fn set_learning_exchange(&self, exchange: Arc<dyn LearningExchange>) -> bool {
        self.exchange.set(exchange).is_ok()
    }

    /// Shares this tick's own observations and outcomes, and adds the other
    /// engines' to them.
    pub(super) fn exchange(
        &self,
        observations: &mut Vec<EdgeObservation>,
        outcomes: &mut Vec<Outcome>,
    ) {
        let Some(x) = self.exchange.get() else {
            return;
        };
        x.share(observations, outcomes);
        let (mut theirs, mut their_outcomes) = x.take();
        observations.append(&mut theirs);
        outcomes.append(&mut their_outcomes);
    }
}
