//! Tracking links in customer milestones: the token a notification system
//! puts in the message ("follow your delivery: …/track/<token>").
//!
//! The server keeps tracking tokens as digests only, so it cannot hand out
//! one minted earlier. An endpoint derives its own instead: HMAC-SHA256
//! under its signing secret (which lives in `lastmile.toml`, not in the
//! store) of the fleet, the stop and the expiry, and grants it like a
//! minted one (kept in the store as a digest). The expiry is the end of
//! the current UTC day plus `tracking_ttl_s`, so every milestone of a stop
//! on one day carries the same token, across restarts and retries; a stop
//! whose milestones span midnight gets a second token, and both work.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use lastmile_engine::fleet::StopId;
use lastmile_node::Node;
use lastmile_node::auth::Principal;
use ring::hmac;

/// Grants this process has made (their digests), so each is written to
/// the store once; forgotten wholesale past this many (a grant written
/// again is harmless).
const REMEMBER: usize = 100_000;

pub struct Links {
    key: hmac::Key,
    fleet: String,
    ttl_ms: i64,
    granted: Mutex<HashSet<[u8; 32]>>,
}

impl Links {
    /// Links for an endpoint of `fleet` signing with `secret_key` (the
    /// first secret's key bytes); `None` when `ttl_s` is 0.
    pub fn new(secret_key: &[u8], fleet: &str, ttl_s: u64) -> Option<Self> {
        (ttl_s > 0).then(|| Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret_key),
            fleet: fleet.to_string(),
            ttl_ms: ttl_s as i64 * 1000,
            granted: Mutex::default(),
        })
    }

    /// The token for `stop` expiring at `expires_ms`.
    fn token(&self, stop: StopId, expires_ms: i64) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(b"lastmile tracking link v1\0");
        ctx.update(self.fleet.as_bytes());
        ctx.update(b"\0");
        ctx.update(&stop.to_le_bytes());
        ctx.update(&expires_ms.to_le_bytes());
        let tag = ctx.sign();
        let mut raw = [0u8; 24];
        raw.copy_from_slice(&tag.as_ref()[..24]);
        lastmile_node::auth::tracking_token(&raw)
    }

    /// Today's token for each of `stops`, granted to `reader`'s fleet
    /// (those new to this process written to the store, in one commit).
    /// Writes and syncs: call it off the async threads.
    pub fn links(
        &self,
        node: &Node,
        reader: &Principal,
        stops: &[StopId],
    ) -> anyhow::Result<HashMap<StopId, String>> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        const DAY_MS: i64 = 86_400_000;
        let expires_ms = (now_ms / DAY_MS + 1) * DAY_MS + self.ttl_ms;
        let tokens: HashMap<StopId, String> = stops
            .iter()
            .map(|&s| (s, self.token(s, expires_ms)))
            .collect();
        let fresh: Vec<(StopId, &str, [u8; 32])> = {
            let granted = self.granted.lock().unwrap_or_else(|p| p.into_inner());
            tokens
                .iter()
                .map(|(&s, t)| (s, t.as_str(), lastmile_node::auth::digest(t)))
                .filter(|(_, _, d)| !granted.contains(d))
                .collect()
        };
        if !fresh.is_empty() {
            let grants: Vec<(StopId, &str)> = fresh.iter().map(|&(s, t, _)| (s, t)).collect();
            node.grant_tracking(reader, &grants, expires_ms)
                .map_err(|r| anyhow::anyhow!("granting tracking links: {}", r.message))?;
            let mut granted = self.granted.lock().unwrap_or_else(|p| p.into_inner());
            if granted.len() + fresh.len() > REMEMBER {
                granted.clear();
            }
            granted.extend(fresh.iter().map(|&(_, _, d)| d));
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_by_stop_expiry_fleet_and_key() {
        let a = Links::new(b"0123456789abcdef", "acme", 60).unwrap();
        let t = a.token(7, 1_000);
        assert!(t.starts_with("trk_") && t.len() == 4 + 48, "{t}");
        assert_eq!(t, a.token(7, 1_000));
        assert_ne!(t, a.token(8, 1_000));
        assert_ne!(t, a.token(7, 2_000));
        let other_fleet = Links::new(b"0123456789abcdef", "globex", 60).unwrap();
        assert_ne!(t, other_fleet.token(7, 1_000));
        let other_key = Links::new(b"fedcba9876543210", "acme", 60).unwrap();
        assert_ne!(t, other_key.token(7, 1_000));
        assert!(Links::new(b"0123456789abcdef", "acme", 0).is_none());
    }
}
