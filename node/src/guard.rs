//! Per-source-address limits: how many connections one address holds at
//! once (checked before a connection costs a TLS handshake), and how fast
//! it may have tokens checked once it has presented wrong ones.
//!
//! Wrong tokens fill a leaky bucket per address that drains at a steady
//! rate. While an address's bucket is full, its token checks are spaced out
//! to that rate: each waits for the next free slot (both the answer to a
//! wrong token and the welcome of a right one, since answering a right
//! guess at once would let a guesser try a thousand tokens in parallel and
//! learn which one works). Tokens that already got in from that address
//! are remembered and never wait, so a depot's devices behind the same NAT
//! as a guesser keep reconnecting at once; a new device there is slowed,
//! never locked out. Nothing is refused for failures alone unless the wait
//! would exceed [`MAX_WAIT`]. The table is bounded: when full, the
//! addresses holding no connection and owing nothing are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at once.
const MAX_ADDRESSES: usize = 100_000;
/// Tokens remembered per address as having got in from it.
const KNOWN_TOKENS: usize = 16;
/// A check that would wait longer than this is refused instead.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Why an address was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It already holds `max_connections_per_address`.
    TooManyConnections,
}

/// When a token presented from an address may be checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// At once.
    Now,
    /// After this wait (the address presented too many wrong tokens).
    After(Duration),
    /// Not now: the queue of checks from this address is too long.
    Refused,
}

#[derive(Clone)]
struct Entry {
    open: u32,
    /// Failed logins not yet drained.
    failures: f64,
    /// When `failures` was last brought up to date.
    at: Instant,
    /// The next free slot for a check while the bucket is full.
    next_check: Instant,
    /// Keys of tokens that got in from this address, newest last.
    known: Vec<u64>,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self {
            open: 0,
            failures: 0.0,
            at: now,
            next_check: now,
            known: Vec::new(),
        }
    }

    fn drain(&mut self, now: Instant, per_s: f64) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.failures = (self.failures - dt * per_s).max(0.0);
        self.at = now;
    }

    /// Nothing worth keeping once its connections are gone.
    fn idle(&self) -> bool {
        self.open == 0 && self.failures == 0.0
    }
}

pub struct AddressGuard {
    max_open: u32,
    /// Failed logins an address may have outstanding before its checks wait.
    burst: f64,
    /// Failed logins forgiven per second (and checks per second while full).
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
        let e = self.entry(&mut t, ip, now);
        if e.open >= self.max_open {
            return Err(Refusal::TooManyConnections);
        }
        e.open += 1;
        Ok(())
    }

    /// Whether `ip` has presented wrong tokens lately (a new connection
    /// from it is asked to prove its address with a QUIC Retry first).
    pub fn suspicious(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut t = self.table();
        t.get_mut(&ip).is_some_and(|e| {
            e.drain(now, self.drain_per_s);
            e.failures > 0.0
        })
    }

    /// When the token with key `token` (see [`token_key`]) presented from
    /// `ip` may be checked; a wait reserves its slot.
    pub fn gate(&self, ip: IpAddr, token: u64) -> Gate {
        let now = Instant::now();
        let mut t = self.table();
        let Some(e) = t.get_mut(&ip) else {
            return Gate::Now;
        };
        e.drain(now, self.drain_per_s);
        if e.known.contains(&token) || e.failures + 1.0 <= self.burst {
            return Gate::Now;
        }
        let slot = e.next_check.max(now);
        let wait = slot - now;
        if wait > MAX_WAIT {
            return Gate::Refused;
        }
        e.next_check = slot + Duration::from_secs_f64(1.0 / self.drain_per_s);
        if wait.is_zero() {
            Gate::Now
        } else {
            Gate::After(wait)
        }
    }

    /// The entry of `ip`, made if new (an address seen over HTTP holds no
    /// connection here, but its tokens and failures count all the same).
    fn entry<'t>(
        &self,
        t: &'t mut HashMap<IpAddr, Entry>,
        ip: IpAddr,
        now: Instant,
    ) -> &'t mut Entry {
        if t.len() >= MAX_ADDRESSES && !t.contains_key(&ip) {
            self.forget_idle(t, now);
        }
        t.entry(ip).or_insert_with(|| Entry::new(now))
    }

    /// The token with key `token` got in from `ip`.
    pub fn auth_succeeded(&self, ip: IpAddr, token: u64) {
        let now = Instant::now();
        let mut t = self.table();
        let e = self.entry(&mut t, ip, now);
        if !e.known.contains(&token) {
            if e.known.len() == KNOWN_TOKENS {
                e.known.remove(0);
            }
            e.known.push(token);
        }
    }

    /// `ip` presented a wrong token.
    pub fn auth_failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut t = self.table();
        let e = self.entry(&mut t, ip, now);
        e.drain(now, self.drain_per_s);
        e.failures += 1.0;
    }

    /// A connection from `ip` ended.
    pub fn release(&self, ip: IpAddr) {
        let mut t = self.table();
        if let Some(e) = t.get_mut(&ip) {
            e.open = e.open.saturating_sub(1);
            // Known tokens are kept while failures are: they are what lets
            // the address's devices past a guesser.
            if e.idle() {
                t.remove(&ip);
            }
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
            !e.idle()
        });
        if t.len() >= MAX_ADDRESSES {
            t.retain(|_, e| e.open > 0);
        }
    }
}

/// A token's key in the guard: 64 bits of its SHA-256 (the guard never
/// holds tokens themselves).
pub fn token_key(token: &str) -> u64 {
    let d = crate::auth::digest(token);
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
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
    fn wrong_tokens_space_out_checks_but_known_tokens_never_wait() {
        // 3 failures allowed, one forgiven (and one check) a second.
        let g = AddressGuard::new(100, 3, 60.0);
        let (good, guess) = (token_key("good"), token_key("guess"));
        g.admit(ip(1)).unwrap();
        assert_eq!(g.gate(ip(1), good), Gate::Now);
        g.auth_succeeded(ip(1), good);
        for _ in 0..3 {
            assert_eq!(g.gate(ip(1), guess), Gate::Now);
            g.auth_failed(ip(1));
        }
        assert!(g.suspicious(ip(1)));
        // Full: checks are spaced a second apart, whatever the token ...
        assert_eq!(g.gate(ip(1), guess), Gate::Now, "the first slot is now");
        let Gate::After(w) = g.gate(ip(1), guess) else {
            panic!("the next check waits")
        };
        assert!(w > Duration::from_millis(900) && w <= Duration::from_secs(1));
        let Gate::After(w) = g.gate(ip(1), token_key("new device")) else {
            panic!("a new token waits its turn too")
        };
        assert!(w > Duration::from_millis(1900));
        // ... but a token that got in from here before goes straight in,
        // and another address is not affected.
        assert_eq!(g.gate(ip(1), good), Gate::Now);
        assert_eq!(g.gate(ip(2), guess), Gate::Now);
        // A queue longer than MAX_WAIT is refused rather than held.
        let mut refused = false;
        for _ in 0..40 {
            if g.gate(ip(1), guess) == Gate::Refused {
                refused = true;
                break;
            }
        }
        assert!(refused);
        g.release(ip(1));
        assert_eq!(g.tracked(), 1, "kept while it owes failures");
    }
}
