//! Who may do what. Tokens are kept only as SHA-256 digests; each maps to a
//! role and (but for admins) a fleet, which owns ranges of vehicle ids.
//! Tracking tokens (a customer's link to one stop) are minted at run time by
//! dispatchers, expire, and are bounded in number.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use lastmile_engine::fleet::{StopId, VehicleId};
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::{FleetEntry, TokenEntry};
use crate::ids;

/// What a token may do (the QUIC WELCOME tells the client which it got).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Role {
    /// Sends pings for the vehicles of its fleet; nothing else.
    Device = 1,
    /// Queries and events of its fleet.
    Reader = 2,
    /// Reader, plus routes, stops and tracking tokens.
    Dispatcher = 3,
    /// A customer's tracking link: one stop's ETA and status, the vehicle's
    /// position when it is on its way to that stop, that stop's events.
    Tracking = 4,
    /// Everything, every fleet (operators, benchmark replays, dev mode).
    Admin = 5,
}

impl Role {
    pub fn from_u8(v: u8) -> Option<Self> {
        [
            Self::Device,
            Self::Reader,
            Self::Dispatcher,
            Self::Tracking,
            Self::Admin,
        ]
        .into_iter()
        .find(|r| *r as u8 == v)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Reader => "reader",
            Self::Dispatcher => "dispatcher",
            Self::Tracking => "tracking",
            Self::Admin => "admin",
        }
    }

    pub fn may_send_pings(self) -> bool {
        matches!(self, Self::Device | Self::Admin)
    }

    pub fn may_read(self) -> bool {
        matches!(self, Self::Reader | Self::Dispatcher | Self::Admin)
    }

    pub fn may_dispatch(self) -> bool {
        matches!(self, Self::Dispatcher | Self::Admin)
    }
}

/// Index of a fleet in the registry.
pub type FleetId = u32;

/// What an authenticated connection acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub role: Role,
    /// `None` only for admins.
    pub fleet: Option<FleetId>,
    /// The one stop a tracking token covers.
    pub stop: Option<StopId>,
    /// For logs: the token's label, never the token.
    pub label: String,
}

struct Fleet {
    name: String,
    /// Sorted, non-overlapping after merge.
    ranges: Vec<[u64; 2]>,
    /// Where its allocated ids live ([`crate::ids`]).
    slot: u32,
}

struct TrackingGrant {
    fleet: Option<FleetId>,
    stop: StopId,
    expires: SystemTime,
}

pub struct Auth {
    fleets: Vec<Fleet>,
    tokens: HashMap<[u8; 32], Principal>,
    tracking: Mutex<HashMap<[u8; 32], TrackingGrant>>,
    max_tracking: usize,
    rng: SystemRandom,
}

/// A tracking token made of 24 unguessable bytes.
pub fn tracking_token(raw: &[u8; 24]) -> String {
    format!("trk_{}", hex(raw))
}

pub fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn parse_hex32(s: &str) -> anyhow::Result<[u8; 32]> {
    if s.len() != 64 {
        bail!("expected 64 hex digits");
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).context("not hex")?;
    }
    Ok(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Auth {
    pub fn new(
        fleets: &[FleetEntry],
        tokens: &[TokenEntry],
        max_tracking: usize,
    ) -> anyhow::Result<Self> {
        let fleets: Vec<Fleet> = fleets
            .iter()
            .map(|f| {
                let mut r = f.vehicles.clone();
                r.sort_unstable();
                let mut merged: Vec<[u64; 2]> = Vec::new();
                for [a, b] in r {
                    match merged.last_mut() {
                        Some(last) if a <= last[1].saturating_add(1) => last[1] = last[1].max(b),
                        _ => merged.push([a, b]),
                    }
                }
                Fleet {
                    name: f.name.clone(),
                    ranges: merged,
                    slot: ids::slot_of_fleet(&f.name),
                }
            })
            .collect();
        let mut slots = HashMap::from([(ids::slot_of_fleet(""), "")]);
        for f in &fleets {
            if let Some(other) = slots.insert(f.slot, &f.name) {
                bail!(
                    "fleets {other:?} and {:?} hash to the same id slot: rename one",
                    f.name
                );
            }
        }
        let mut map = HashMap::new();
        for (i, t) in tokens.iter().enumerate() {
            let key = match (&t.token, &t.token_sha256) {
                (Some(tok), _) => digest(tok),
                (None, Some(h)) => parse_hex32(h)?,
                (None, None) => bail!("tokens[{i}] has no token"),
            };
            let fleet = match &t.fleet {
                Some(name) => Some(
                    fleets
                        .iter()
                        .position(|f| &f.name == name)
                        .with_context(|| format!("unknown fleet {name:?}"))?
                        as FleetId,
                ),
                None => None,
            };
            let label = t.name.clone().unwrap_or_else(|| format!("tokens[{i}]"));
            if map
                .insert(
                    key,
                    Principal {
                        role: t.role,
                        fleet,
                        stop: None,
                        label,
                    },
                )
                .is_some()
            {
                bail!("tokens[{i}] repeats an earlier token");
            }
        }
        Ok(Self {
            fleets,
            tokens: map,
            tracking: Mutex::new(HashMap::new()),
            max_tracking: max_tracking.max(1),
            rng: SystemRandom::new(),
        })
    }

    /// The principal a token stands for, if any.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let key = digest(token);
        if let Some(p) = self.tokens.get(&key) {
            return Some(p.clone());
        }
        let mut tracking = self.tracking.lock().unwrap_or_else(|p| p.into_inner());
        match tracking.get(&key) {
            Some(g) if g.expires > SystemTime::now() => Some(Principal {
                role: Role::Tracking,
                fleet: g.fleet,
                stop: Some(g.stop),
                label: format!("tracking:{}", g.stop),
            }),
            Some(_) => {
                tracking.remove(&key);
                None
            }
            None => None,
        }
    }

    /// The fleet of that name, if configured.
    pub fn fleet_id(&self, name: &str) -> Option<FleetId> {
        self.fleets
            .iter()
            .position(|f| f.name == name)
            .map(|i| i as FleetId)
    }

    pub fn fleet_name(&self, fleet: Option<FleetId>) -> &str {
        fleet
            .and_then(|f| self.fleets.get(f as usize))
            .map_or("", |f| f.name.as_str())
    }

    /// Whether `p` acts for the fleet owning `vehicle` (admins: always).
    pub fn covers(&self, p: &Principal, vehicle: VehicleId) -> bool {
        match p.fleet {
            // Admins, and tracking links an admin minted (scoped to their stop).
            None => p.role == Role::Admin || p.stop.is_some(),
            Some(_) => self.scope(p).reaches(ids::Kind::Vehicle, vehicle),
        }
    }

    /// The scope of the fleet whose vehicle ranges hold `vehicle`, if any.
    pub fn range_scope(&self, vehicle: VehicleId) -> Option<ids::Scope<'_>> {
        self.fleets
            .iter()
            .map(|f| ids::Scope {
                slot: f.slot,
                ranges: &f.ranges,
                everything: false,
            })
            .find(|s| s.reaches(ids::Kind::Vehicle, vehicle))
    }

    /// Where `p`'s names live: its fleet's, or (admins, and tracking links
    /// they minted) the names outside every fleet, with every number
    /// standing for itself.
    pub fn scope(&self, p: &Principal) -> ids::Scope<'_> {
        match p.fleet.and_then(|f| self.fleets.get(f as usize)) {
            Some(f) => ids::Scope {
                slot: f.slot,
                ranges: &f.ranges,
                everything: false,
            },
            None => ids::Scope {
                slot: ids::slot_of_fleet(""),
                ranges: &[],
                everything: p.fleet.is_none(),
            },
        }
    }

    /// Mints a tracking token for one stop, valid for `ttl`. When the table
    /// is full, expired grants are dropped first, then the one expiring
    /// soonest.
    pub fn mint_tracking(
        &self,
        issuer: &Principal,
        stop: StopId,
        ttl: Duration,
    ) -> anyhow::Result<(String, SystemTime)> {
        let mut raw = [0u8; 24];
        self.rng
            .fill(&mut raw)
            .map_err(|_| anyhow::anyhow!("no system randomness"))?;
        let token = tracking_token(&raw);
        let expires = SystemTime::now() + ttl;
        self.grant_tracking(issuer, stop, &token, expires);
        Ok((token, expires))
    }

    /// Makes `token` a tracking token for one stop of `issuer`'s fleet
    /// until `expires` (a token made elsewhere: webhooks derive theirs, see
    /// `lastmile-hooks`).
    pub fn grant_tracking(
        &self,
        issuer: &Principal,
        stop: StopId,
        token: &str,
        expires: SystemTime,
    ) {
        self.insert_grant(
            digest(token),
            TrackingGrant {
                fleet: issuer.fleet,
                stop,
                expires,
            },
        );
    }

    /// Adds a grant, keeping the table bounded: when full, expired grants
    /// go first, then the one expiring soonest.
    fn insert_grant(&self, key: [u8; 32], grant: TrackingGrant) {
        let mut tracking = self.tracking.lock().unwrap_or_else(|p| p.into_inner());
        if tracking.len() >= self.max_tracking {
            let now = SystemTime::now();
            tracking.retain(|_, g| g.expires > now);
            if tracking.len() >= self.max_tracking
                && let Some(k) = tracking
                    .iter()
                    .min_by_key(|(_, g)| g.expires)
                    .map(|(k, _)| *k)
            {
                tracking.remove(&k);
            }
        }
        tracking.insert(key, grant);
    }

    /// Takes back a tracking grant kept by the store; false if it expired
    /// or names a fleet the configuration no longer has.
    pub fn restore_tracking(&self, g: &crate::store::StoredGrant) -> bool {
        let fleet = match &g.fleet {
            None => None,
            Some(name) => match self.fleets.iter().position(|f| &f.name == name) {
                Some(i) => Some(i as FleetId),
                None => return false,
            },
        };
        let expires = UNIX_EPOCH + Duration::from_millis(g.expires_ms.max(0) as u64);
        if expires <= SystemTime::now() {
            return false;
        }
        self.insert_grant(
            g.digest,
            TrackingGrant {
                fleet,
                stop: g.stop,
                expires,
            },
        );
        true
    }

    /// A fresh random token for dev mode.
    pub fn random_token(&self, prefix: &str) -> anyhow::Result<String> {
        let mut raw = [0u8; 24];
        self.rng
            .fill(&mut raw)
            .map_err(|_| anyhow::anyhow!("no system randomness"))?;
        Ok(format!("{prefix}_{}", hex(&raw)))
    }

    /// Adds a token at start-up (dev mode).
    pub fn add_token(&mut self, token: &str, role: Role, fleet: Option<FleetId>, label: &str) {
        self.tokens.insert(
            digest(token),
            Principal {
                role,
                fleet,
                stop: None,
                label: label.to_string(),
            },
        );
    }
}

/// Milliseconds since the epoch of a wall-clock time.
pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let fleets = vec![
            FleetEntry {
                name: "acme".into(),
                vehicles: vec![[10, 20], [1, 5], [21, 30]],
                ..FleetEntry::default()
            },
            FleetEntry {
                name: "globex".into(),
                vehicles: vec![[100, 200]],
                ..FleetEntry::default()
            },
        ];
        let tokens = vec![
            TokenEntry {
                token: Some("acme-device-token-1".into()),
                token_sha256: None,
                role: Role::Device,
                fleet: Some("acme".into()),
                name: None,
            },
            TokenEntry {
                token: None,
                token_sha256: Some(hex(&digest("globex-reader-token"))),
                role: Role::Reader,
                fleet: Some("globex".into()),
                name: Some("globex reader".into()),
            },
        ];
        Auth::new(&fleets, &tokens, 2).unwrap()
    }

    #[test]
    fn tokens_roles_and_fleet_scope() {
        let a = auth();
        assert!(a.authenticate("wrong").is_none());
        assert!(a.authenticate("").is_none());
        let dev = a.authenticate("acme-device-token-1").unwrap();
        assert_eq!(dev.role, Role::Device);
        assert_eq!(a.fleet_name(dev.fleet), "acme");
        for v in [1, 5, 10, 25, 30] {
            assert!(a.covers(&dev, v), "{v}");
        }
        for v in [0, 6, 9, 31, 150, u64::MAX] {
            assert!(!a.covers(&dev, v), "{v}");
        }
        let reader = a.authenticate("globex-reader-token").unwrap();
        assert_eq!(reader.label, "globex reader");
        assert!(a.covers(&reader, 150) && !a.covers(&reader, 3));
    }

    #[test]
    fn tracking_tokens_expire_and_are_bounded() {
        let a = auth();
        let issuer = a.authenticate("globex-reader-token").unwrap();
        let (t1, _) = a
            .mint_tracking(&issuer, 7, Duration::from_secs(60))
            .unwrap();
        let p = a.authenticate(&t1).unwrap();
        assert_eq!(
            (p.role, p.stop, p.fleet),
            (Role::Tracking, Some(7), issuer.fleet)
        );
        let (t0, _) = a.mint_tracking(&issuer, 8, Duration::ZERO).unwrap();
        assert!(a.authenticate(&t0).is_none(), "expired");
        let (t2, _) = a
            .mint_tracking(&issuer, 9, Duration::from_secs(120))
            .unwrap();
        let (t3, _) = a
            .mint_tracking(&issuer, 10, Duration::from_secs(180))
            .unwrap();
        // Capacity 2: the grant expiring soonest (t1) made room.
        assert!(a.authenticate(&t1).is_none());
        assert!(a.authenticate(&t2).is_some() && a.authenticate(&t3).is_some());
        assert_ne!(t2, t3);
    }
}
