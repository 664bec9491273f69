//! The rules a fleet's zones carry, judged for one vehicle after each
//! matched position has been judged against the zones themselves (see
//! [`crate::zones::presence`], whose hysteresis these inherit):
//!
//! - `forbidden_zone` when it enters a zone of kind `forbidden`;
//! - `outside_area` when it is inside none of its fleet's `allowed` zones
//!   (and the fleet has some) for `zone_positions` positions in a row,
//!   again only after it has been back inside one;
//! - `zone_speeding` when it drives above the lowest `speed_limit_kmh` of
//!   the zones it is inside, by `[detect] speeding_margin_kmh`, for
//!   `speeding_for_s` (over once below the limit itself, as for the legal
//!   limit).
//!
//! And `off_hours_movement` when it has been moving for `[detect]
//! off_hours_for_s` outside its fleet's working hours (see
//! [`crate::zones::hours`]), once per time it moves.
//!
//! Each is then quiet for `[detect] rule_cooldown_s` for that vehicle and
//! zone: a van weaving along a forbidden street's border, or in and out of
//! its area at the edge of town, is told once, not at every crossing.

use super::detect::{DetectConfig, Speeding};
use super::events::EventKind;
use crate::zones::{Presence, WorkingHours, ZoneChange, ZoneEvent, ZoneId, ZoneKind, ZoneSet};

/// Cool-downs a vehicle remembers at most (the oldest is forgotten).
const MAX_COOLDOWNS: usize = 8;
/// The cool-down keys of `outside_area` and `off_hours_movement` (zone
/// ids are below them).
const AREA: u64 = u64::MAX;
const HOURS: u64 = u64::MAX - 1;

/// One rule event to emit: kind, zone, value, reference.
pub type RuleEvent = (EventKind, Option<ZoneId>, f64, f64);

/// What one vehicle's rules remember.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Rules {
    /// Positions in a row outside every allowed zone, and whether
    /// `outside_area` was told for this time outside.
    outside_positions: u32,
    outside_since: f64,
    outside_told: bool,
    speeding: Speeding,
    /// The zone whose limit `speeding` judges.
    speeding_zone: Option<ZoneId>,
    /// (zone or [`AREA`], quiet until).
    quiet: Vec<(u64, f64)>,
    /// Moving outside working hours since, and told for it.
    off_hours_since: Option<f64>,
    off_hours_told: bool,
}

impl Rules {
    /// Whether a rule keyed `key` may be told at `now`; if so it is quiet
    /// from now for `cooldown_s`.
    fn may_tell(&mut self, key: u64, now: f64, cooldown_s: f64) -> bool {
        self.quiet.retain(|&(_, until)| until > now);
        if self.quiet.iter().any(|&(k, _)| k == key) {
            return false;
        }
        if self.quiet.len() >= MAX_COOLDOWNS {
            self.quiet.remove(0);
        }
        self.quiet.push((key, now + cooldown_s));
        true
    }

    /// Judges the fleet's working hours at `now` for a vehicle `moving` or
    /// not.
    pub fn judge_hours(
        &mut self,
        c: &DetectConfig,
        hours: &WorkingHours,
        moving: bool,
        now: f64,
        out: &mut Vec<RuleEvent>,
    ) {
        if !moving || hours.contains(now) {
            (self.off_hours_since, self.off_hours_told) = (None, false);
            return;
        }
        let since = *self.off_hours_since.get_or_insert(now);
        let moved_s = now - since;
        if !self.off_hours_told && moved_s >= c.off_hours_for_s {
            self.off_hours_told = true;
            if self.may_tell(HOURS, now, c.rule_cooldown_s) {
                out.push((EventKind::OffHoursMovement, None, since, moved_s));
            }
        }
    }

    /// Judges the rules at `now`, after `presence` took the position and
    /// told `changes`; pushes the events to tell onto `out`.
    pub fn judge(
        &mut self,
        c: &DetectConfig,
        zones: &ZoneSet,
        presence: &Presence,
        changes: &[ZoneEvent],
        (now, speed_mps): (f64, f64),
        out: &mut Vec<RuleEvent>,
    ) {
        let kind_of = |z: ZoneId| zones.get(z).map(|z| z.kind);
        for e in changes {
            if e.change == ZoneChange::Entered
                && kind_of(e.zone) == Some(ZoneKind::Forbidden)
                && self.may_tell(e.zone, now, c.rule_cooldown_s)
            {
                out.push((EventKind::ForbiddenZone, Some(e.zone), e.since, 0.0));
            }
        }
        self.judge_area(c, zones, presence, changes, now, out);
        self.judge_speed(c, zones, presence, (now, speed_mps), out);
    }

    fn judge_area(
        &mut self,
        c: &DetectConfig,
        zones: &ZoneSet,
        presence: &Presence,
        changes: &[ZoneEvent],
        now: f64,
        out: &mut Vec<RuleEvent>,
    ) {
        if !zones.has_allowed() {
            (self.outside_positions, self.outside_told) = (0, false);
            return;
        }
        let allowed = |z: ZoneId| zones.get(z).is_some_and(|z| z.kind == ZoneKind::Allowed);
        let inside = presence.inside().any(|(z, _)| allowed(z)) || presence.entering(allowed);
        if inside {
            (self.outside_positions, self.outside_told) = (0, false);
            return;
        }
        // Leaving an area was confirmed over as many positions already.
        let left = changes
            .iter()
            .find(|e| e.change == ZoneChange::Left && allowed(e.zone));
        if self.outside_positions == 0 {
            self.outside_since = now;
        }
        self.outside_positions = match left {
            Some(_) => self.outside_positions.max(c.zone_positions),
            None => self.outside_positions + 1,
        };
        if self.outside_told || self.outside_positions < c.zone_positions {
            return;
        }
        self.outside_told = true;
        if self.may_tell(AREA, now, c.rule_cooldown_s) {
            let (zone, since) =
                left.map_or((None, self.outside_since), |e| (Some(e.zone), e.since));
            out.push((EventKind::OutsideArea, zone, since, 0.0));
        }
    }

    fn judge_speed(
        &mut self,
        c: &DetectConfig,
        zones: &ZoneSet,
        presence: &Presence,
        (now, speed_mps): (f64, f64),
        out: &mut Vec<RuleEvent>,
    ) {
        let lowest = presence
            .inside()
            .filter_map(|(z, _)| Some((zones.get(z)?.speed_limit_kmh?, z)))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        if lowest.map(|l| l.1) != self.speeding_zone {
            // Another zone's limit: judged afresh.
            self.speeding = Speeding::default();
            self.speeding_zone = lowest.map(|l| l.1);
        }
        let limit = lowest.map(|l| l.0 / 3.6);
        if self.speeding.observe(c, now, speed_mps, limit)
            && let Some((_, zone)) = lowest
            && self.may_tell(zone, now, c.rule_cooldown_s)
        {
            let (top, limit) = (self.speeding.top_mps, limit.unwrap_or(f64::NAN));
            out.push((EventKind::ZoneSpeeding, Some(zone), top, limit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_is_quiet_for_its_cooldown_and_forgets_the_oldest() {
        let mut r = Rules::default();
        assert!(r.may_tell(7, 0.0, 900.0));
        assert!(!r.may_tell(7, 899.0, 900.0));
        assert!(r.may_tell(8, 899.0, 900.0), "another zone");
        assert!(r.may_tell(7, 900.0, 900.0));
        for z in 100..100 + MAX_COOLDOWNS as u64 {
            assert!(r.may_tell(z, 1000.0, 900.0));
        }
        assert!(r.quiet.len() <= MAX_COOLDOWNS);
    }
}
