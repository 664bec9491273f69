//! Per-source-address limits, checked before a connection costs a TLS
//! handshake: how many connections one address holds at once, and how many
//! wrong tokens it may present. Failed logins fill a leaky bucket that
//! drains at a steady rate; an address whose bucket is full is refused
//! until it has drained, so guessing tokens runs at a few tries a minute
//! however hard the guesser pushes. The table is bounded: when full, the
//! addresses holding no connection and owing nothing are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Addresses tracked at once.
const MAX_ADDRESSES: usize = 100_000;

/// Why an address was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It already holds `max_connections_per_address`.
    TooManyConnections,
    /// It presented too many wrong tokens lately.
    TooManyAuthFailures,
}

#[derive(Clone, Copy)]
struct Entry {
    open: u32,
    /// Failed logins not yet drained.
    failures: f64,
    /// When `failures` was last brought up to date.
    at: Instant,
}

impl Entry {
    fn drain(&mut self, now: Instant, per_s: f64) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.failures = (self.failures - dt * per_s).max(0.0);
        self.at = now;
    }
}

pub struct AddressGuard {
    max_open: u32,
    /// Failed logins an address may have outstanding before it is refused.
    burst: f64,
    /// Failed logins forgiven per second.
    drain_per_s: f64,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl AddressGuard {
    pub fn new(max_open: u32, burst: u32, forgiven_per_minute: f64) -> Self {
        Self {
            max_open,
            burst: f64::from(burst),
            drain_per_s: forgiven_per_minute / 60.0,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection from `ip` (to be [`release`](Self::release)d
    /// when it ends), or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut t = self.table();
        if t.len() >= MAX_ADDRESSES && !t.contains_key(&ip) {
            self.forget_idle(&mut t, now);
        }
        let e = t.entry(ip).or_insert(Entry {
            open: 0,
            failures: 0.0,
            at: now,
        });
        e.drain(now, self.drain_per_s);
        // Admitted only with room in the bucket for one more failure.
        if e.failures + 1.0 > self.burst {
            return Err(Refusal::TooManyAuthFailures);
        }
        if e.open >= self.max_open {
            return Err(Refusal::TooManyConnections);
        }
        e.open += 1;
        Ok(())
    }

    /// A connection from `ip` ended.
    pub fn release(&self, ip: IpAddr) {
        let mut t = self.table();
        if let Some(e) = t.get_mut(&ip) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 && e.failures == 0.0 {
                t.remove(&ip);
            }
        }
    }

    /// `ip` presented a wrong token.
    pub fn auth_failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut t = self.table();
        if let Some(e) = t.get_mut(&ip) {
            e.drain(now, self.drain_per_s);
            e.failures += 1.0;
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.table().len()
    }

    /// Drops the addresses holding no connection whose failures have
    /// drained; if that frees nothing, those holding no connection at all.
    fn forget_idle(&self, t: &mut HashMap<IpAddr, Entry>, now: Instant) {
        let per_s = self.drain_per_s;
        t.retain(|_, e| {
            e.drain(now, per_s);
            e.open > 0 || e.failures > 0.0
        });
        if t.len() >= MAX_ADDRESSES {
            t.retain(|_, e| e.open > 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn connections_per_address_are_capped_and_freed() {
        let g = AddressGuard::new(2, 5, 6.0);
        assert_eq!(g.admit(ip(1)), Ok(()));
        assert_eq!(g.admit(ip(1)), Ok(()));
        assert_eq!(g.admit(ip(1)), Err(Refusal::TooManyConnections));
        assert_eq!(g.admit(ip(2)), Ok(()), "another address is not affected");
        g.release(ip(1));
        assert_eq!(g.admit(ip(1)), Ok(()));
        for _ in 0..2 {
            g.release(ip(1));
        }
        g.release(ip(2));
        assert_eq!(g.tracked(), 0, "nothing kept for quiet addresses");
    }

    #[test]
    fn wrong_tokens_block_an_address_until_they_drain() {
        // 3 failures allowed, one forgiven a second.
        let g = AddressGuard::new(100, 3, 60.0);
        for _ in 0..3 {
            g.admit(ip(1)).unwrap();
            g.auth_failed(ip(1));
            g.release(ip(1));
        }
        assert_eq!(g.admit(ip(1)), Err(Refusal::TooManyAuthFailures));
        assert_eq!(g.admit(ip(2)), Ok(()));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(g.admit(ip(1)), Ok(()), "one failure forgiven");
        g.auth_failed(ip(1));
        g.auth_failed(ip(1));
        assert_eq!(g.admit(ip(1)), Err(Refusal::TooManyAuthFailures));
    }
}
