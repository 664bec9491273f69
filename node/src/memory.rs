//! The memory bound. Every queue, buffer and table in the server is bounded
//! on its own; this is the guard over their sum and over what no single
//! bound sees (a fleet of new vehicles, allocator slack). The process's
//! resident memory is sampled ten times a second; above the bound the
//! server takes no new pings: ping streams are not read (QUIC flow control
//! holds the senders) and datagrams are shed and counted. Queries and
//! commands go on. It lets pings in again once memory is back under 95 % of
//! the bound, so it does not flap.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Share of the bound memory must fall under before pings are let in again.
const RESUME_SHARE: f64 = 0.95;

pub struct MemoryGuard {
    /// Bytes; None: no bound.
    bound: Option<u64>,
    over: AtomicBool,
    /// Times memory went over the bound.
    pub episodes: AtomicU64,
}

impl MemoryGuard {
    /// `max_mb` from the configuration: 0 means 90 % of the cgroup's memory
    /// limit when the server runs under one (a container), else no bound.
    pub fn new(max_mb: u64) -> Self {
        let bound = match max_mb {
            0 => cgroup_limit().map(|b| b / 10 * 9),
            mb => Some(mb << 20),
        };
        Self {
            bound,
            over: AtomicBool::new(false),
            episodes: AtomicU64::new(0),
        }
    }

    pub fn bound_bytes(&self) -> Option<u64> {
        self.bound
    }

    /// True while new pings must wait or be shed.
    pub fn over(&self) -> bool {
        self.over.load(Relaxed)
    }

    /// Updates the state from a resident-memory sample.
    pub fn observe(&self, rss: u64) {
        let Some(bound) = self.bound else { return };
        if self.over() {
            if (rss as f64) < bound as f64 * RESUME_SHARE {
                self.over.store(false, Relaxed);
                tracing::info!(
                    rss_mb = rss >> 20,
                    "memory back under the bound: taking pings again"
                );
            }
        } else if rss > bound {
            self.over.store(true, Relaxed);
            self.episodes.fetch_add(1, Relaxed);
            tracing::warn!(
                rss_mb = rss >> 20,
                bound_mb = bound >> 20,
                "memory over the bound: holding ping streams, shedding datagrams"
            );
        }
    }
}

/// The memory limit of the cgroup (v2) the process runs in, if any.
fn cgroup_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let file = format!("/sys/fs/cgroup{}/memory.max", path.trim_end_matches('/'));
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_bound_until_well_under_it() {
        let g = MemoryGuard::new(100);
        let mb = |n: u64| n << 20;
        g.observe(mb(90));
        assert!(!g.over());
        g.observe(mb(101));
        assert!(g.over());
        g.observe(mb(97));
        assert!(g.over(), "hysteresis: 97 % is not yet under 95 %");
        g.observe(mb(94));
        assert!(!g.over());
        g.observe(mb(120));
        assert_eq!(g.episodes.load(Relaxed), 2);
    }

    #[test]
    fn without_a_bound_nothing_is_held() {
        let g = MemoryGuard {
            bound: None,
            over: AtomicBool::new(false),
            episodes: AtomicU64::new(0),
        };
        g.observe(u64::MAX);
        assert!(!g.over());
    }
}
