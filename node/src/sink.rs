//! Where accepted pings go: the engine, or — to measure the front end's own
//! ceiling — a sink that only counts them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use lastmile_engine::Ping;
use lastmile_engine::fleet::{Admission, Engine, VehicleId};

pub enum Sink {
    Engine(Arc<Engine>),
    Counting(AtomicU64),
}

impl Sink {
    /// Reliable path: what does not fit now comes back in `refused`.
    pub fn offer(
        &self,
        pings: &[(VehicleId, Ping)],
        refused: &mut Vec<(VehicleId, Ping)>,
    ) -> usize {
        match self {
            Self::Engine(e) => e.offer(pings, refused),
            Self::Counting(n) => {
                n.fetch_add(pings.len() as u64, Relaxed);
                pings.len()
            }
        }
    }

    /// Lossy path (datagrams): returns (accepted, shed).
    pub fn submit_lossy(&self, pings: &[(VehicleId, Ping)]) -> (usize, usize) {
        match self {
            Self::Engine(e) => {
                let s = e.submit(pings, Admission::Shed);
                (s.accepted, s.shed)
            }
            Self::Counting(n) => {
                n.fetch_add(pings.len() as u64, Relaxed);
                (pings.len(), 0)
            }
        }
    }

    pub fn engine(&self) -> Option<&Arc<Engine>> {
        match self {
            Self::Engine(e) => Some(e),
            Self::Counting(_) => None,
        }
    }
}
