//! The exception detectors: small state machines, one per concern, each with
//! hysteresis so a value hovering at a threshold does not make events flap.
//! They see one vehicle's observations in event time and say when to fire;
//! the vehicle turns that into an [`Event`](super::Event).

/// Detector thresholds. Times in seconds, speeds in m/s, distances in metres.
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// `eta_changed` when a stop's ETA moved from the last one announced by
    /// more than this, or by more than `eta_change_share` of its time to go
    /// if that is more (five minutes either way mean little two hours out).
    pub eta_change_s: f64,
    pub eta_change_share: f64,
    /// `late` when the ETA passes the window end by more than this…
    pub late_margin_s: f64,
    /// …and `back_on_time` only once it is this far back inside the window.
    pub on_time_margin_s: f64,
    /// `off_route` after driving this far and this many pings off the
    /// planned path (standing off it, e.g. at a light whose fix lands on
    /// the cross street, does not count) on a way that costs at least
    /// `off_route_detour_s` more than the plan (an equally fast street is
    /// not a deviation)…
    pub off_route_m: f64,
    pub off_route_pings: u32,
    pub off_route_detour_s: f64,
    /// …`back_on_route` after this many consecutive pings on it. The plan
    /// is the path the vehicle had once it had been moving this long on
    /// the leg (a leg begun standing may start facing either way).
    pub on_route_pings: u32,
    pub plan_settle_s: f64,
    /// `arrived` inside this radius of a stop while slower than `arrive_speed`;
    /// `departed` once beyond `depart_radius` (larger: hysteresis).
    pub arrive_radius_m: f64,
    pub arrive_speed_mps: f64,
    pub depart_radius_m: f64,
    /// A stop other than the next one arrives only after the vehicle has
    /// stayed slow inside its radius this long: waiting at a light by a later
    /// customer's door, or standing at the depot beside one at the start of
    /// the day, is not a delivery out of order.
    pub out_of_order_dwell_s: f64,
    /// `stalled` after standing this long away from any stop while one is due.
    pub stall_s: f64,
    /// `speeding` when above the legal limit by this many km/h for `speeding_for_s`;
    /// over until below the limit itself.
    pub speeding_margin_kmh: f64,
    pub speeding_for_s: f64,
    /// `harsh_braking` on a deceleration above this between two speed
    /// readings `braking_min_span_s` to `braking_max_interval_s` apart (a
    /// span of one second would judge the speed noise); then quiet for
    /// `braking_refractory_s`.
    pub harsh_braking_mps2: f64,
    pub braking_min_span_s: f64,
    pub braking_max_interval_s: f64,
    pub braking_refractory_s: f64,
    /// `offline` after this long without a ping.
    pub offline_s: f64,
    /// `gps_outlier` for a fix the matcher rejected at least this far from
    /// the vehicle's position (a rejected fix a few metres off, e.g. behind
    /// a car standing on a one-way street, is noise, not news).
    pub outlier_min_m: f64,
    /// Moving above `moving_mps`, stopped below `stopped_mps` (hysteresis).
    pub moving_mps: f64,
    pub stopped_mps: f64,
    /// The customer milestone `arriving` once the next stop's ETA is at
    /// most this far ahead.
    pub arriving_s: f64,
    /// `at_risk` once the probability that a stop is reached after its
    /// window's end passes `at_risk`; `risk_cleared` once it falls below
    /// `at_risk_clear` (hysteresis).
    pub at_risk: f64,
    pub at_risk_clear: f64,
    /// `late` and `at_risk` are raised once their condition has held for
    /// `confirm_share` of the stop's time to go, at most `confirm_s`, and
    /// never past the window's end: a vehicle standing at a long light an
    /// hour out does not raise them, one that keeps slipping does, with
    /// time to spare (BENCHMARKS.md, issue 37). Their clearing is not held.
    pub confirm_share: f64,
    pub confirm_s: f64,
    /// A vehicle enters a zone once this far inside its border and leaves
    /// it once this far outside (hysteresis: driving along a border, or a
    /// fix wavering across it, changes nothing).
    pub zone_margin_m: f64,
    /// …and once this many positions in a row have shown it (a single
    /// wrong position changes nothing); the change is dated from the first.
    pub zone_positions: u32,
    /// A zone rule (`forbidden_zone`, `outside_area`, `zone_speeding`) told
    /// for a vehicle and zone is not told again for this long.
    pub rule_cooldown_s: f64,
    /// `off_hours_movement` after moving this long outside the fleet's
    /// working hours (a van repositioned a few metres is not a theft).
    pub off_hours_for_s: f64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            eta_change_s: 120.0,
            eta_change_share: 0.05,
            late_margin_s: 0.0,
            on_time_margin_s: 120.0,
            off_route_m: 100.0,
            off_route_detour_s: 90.0,
            off_route_pings: 2,
            on_route_pings: 2,
            plan_settle_s: 30.0,
            arrive_radius_m: 50.0,
            arrive_speed_mps: 2.0,
            out_of_order_dwell_s: 60.0,
            depart_radius_m: 100.0,
            stall_s: 300.0,
            speeding_margin_kmh: 10.0,
            speeding_for_s: 10.0,
            harsh_braking_mps2: 4.5,
            braking_min_span_s: 1.5,
            braking_max_interval_s: 4.0,
            braking_refractory_s: 10.0,
            offline_s: 120.0,
            outlier_min_m: 50.0,
            moving_mps: 2.0,
            stopped_mps: 1.0,
            arriving_s: 600.0,
            at_risk: 0.3,
            at_risk_clear: 0.15,
            confirm_share: 0.2,
            confirm_s: 600.0,
            zone_margin_m: 15.0,
            zone_positions: 2,
            rule_cooldown_s: 900.0,
            off_hours_for_s: 60.0,
        }
    }
}

impl DetectConfig {
    /// Rejects settings that would make detectors meaningless.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("eta_change_s", self.eta_change_s),
            ("off_route_m", self.off_route_m),
            ("off_route_detour_s", self.off_route_detour_s),
            ("arrive_radius_m", self.arrive_radius_m),
            ("out_of_order_dwell_s", self.out_of_order_dwell_s),
            ("stall_s", self.stall_s),
            ("speeding_for_s", self.speeding_for_s),
            ("harsh_braking_mps2", self.harsh_braking_mps2),
            ("braking_min_span_s", self.braking_min_span_s),
            ("braking_max_interval_s", self.braking_max_interval_s),
            ("offline_s", self.offline_s),
            ("arriving_s", self.arriving_s),
            ("zone_margin_m", self.zone_margin_m),
            ("rule_cooldown_s", self.rule_cooldown_s),
            ("off_hours_for_s", self.off_hours_for_s),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number, got {v}"));
            }
        }
        if self.zone_positions == 0 {
            return Err("zone_positions must be at least 1".into());
        }
        if self.depart_radius_m < self.arrive_radius_m {
            return Err("depart_radius_m must be at least arrive_radius_m".into());
        }
        if self.moving_mps < self.stopped_mps {
            return Err("moving_mps must be at least stopped_mps".into());
        }
        let shares = [
            ("eta_change_share", self.eta_change_share),
            ("confirm_share", self.confirm_share),
        ];
        for (name, v) in shares {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("{name} must be at least 0 and below 1, got {v}"));
            }
        }
        if !(self.confirm_s.is_finite() && self.confirm_s >= 0.0) {
            return Err(format!(
                "confirm_s must be zero or a positive number, got {}",
                self.confirm_s
            ));
        }
        let risk_ok = self.at_risk > 0.0
            && self.at_risk < 1.0
            && self.at_risk_clear >= 0.0
            && self.at_risk_clear <= self.at_risk;
        if !risk_ok {
            return Err(
                "at_risk must be between 0 and 1, at_risk_clear between 0 and at_risk".into(),
            );
        }
        Ok(())
    }
}

/// Moving or stopped, with hysteresis, and since when.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, Default, PartialEq,
)]
pub struct Motion {
    pub moving: bool,
    /// When the current state began (event time).
    pub since: f64,
}

impl Motion {
    /// Not yet observed: stopped since the first reading.
    pub fn new() -> Self {
        Self {
            moving: false,
            since: f64::NAN,
        }
    }

    /// Takes a speed reading; true when the state changed.
    pub fn observe(&mut self, c: &DetectConfig, time: f64, speed: f64) -> bool {
        if self.since.is_nan() {
            self.since = time;
        }
        let flip = if self.moving {
            speed < c.stopped_mps
        } else {
            speed > c.moving_mps
        };
        if flip {
            self.moving = !self.moving;
            self.since = time;
        }
        flip
    }
}

/// `speeding`: above limit + margin for long enough; over once back under
/// the limit itself. Fires once per episode, with the top speed seen so far.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, Default, PartialEq,
)]
pub struct Speeding {
    over_since: Option<f64>,
    fired: bool,
    pub top_mps: f64,
}

impl Speeding {
    /// `limit_mps` is the legal limit of the road (`None`: unknown, no judgement).
    /// Returns true when the event should fire now.
    pub fn observe(
        &mut self,
        c: &DetectConfig,
        time: f64,
        speed: f64,
        limit_mps: Option<f64>,
    ) -> bool {
        let Some(limit) = limit_mps else {
            *self = Self::default();
            return false;
        };
        let margin = c.speeding_margin_kmh / 3.6;
        if speed > limit + margin {
            let since = *self.over_since.get_or_insert(time);
            self.top_mps = self.top_mps.max(speed);
            if !self.fired && time - since >= c.speeding_for_s {
                self.fired = true;
                return true;
            }
        } else if speed <= limit {
            *self = Self::default();
        }
        false
    }
}

/// `harsh_braking`: the speed drop over the last few seconds of readings.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, Default, PartialEq,
)]
pub struct Braking {
    /// The latest readings, oldest first: their times, and their speeds
    /// (`f32` is a micrometre per second, and this is per vehicle).
    times: [f64; 4],
    speeds: [f32; 4],
    len: u8,
    quiet_until: f64,
}

impl Braking {
    /// Returns the deceleration (m/s²) when it should fire.
    pub fn observe(&mut self, c: &DetectConfig, time: f64, speed: f64) -> Option<f64> {
        let len = usize::from(self.len);
        let decel = self.times[..len]
            .iter()
            .zip(&self.speeds[..len])
            .filter(|&(t, _)| {
                (c.braking_min_span_s..=c.braking_max_interval_s).contains(&(time - t))
            })
            .map(|(t, &v)| (f64::from(v) - speed) / (time - t))
            .fold(f64::NEG_INFINITY, f64::max);
        let mut len = len;
        if len == self.times.len() {
            self.times.rotate_left(1);
            self.speeds.rotate_left(1);
            len -= 1;
        }
        self.times[len] = time;
        self.speeds[len] = speed as f32;
        self.len = (len + 1) as u8;
        (decel > c.harsh_braking_mps2 && time >= self.quiet_until).then(|| {
            self.quiet_until = time + c.braking_refractory_s;
            decel
        })
    }
}

/// `off_route` / `back_on_route` against the planned path.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, Default, PartialEq,
)]
pub struct OffRoute {
    off_since: Option<f64>,
    off_m: f64,
    off_pings: u32,
    on_pings: u32,
    pub off: bool,
}

/// What [`OffRoute::observe`] decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RouteChange {
    /// The detour's cost so far, seconds.
    Left(f64),
    /// Seconds it was off.
    Rejoined(f64),
}

impl OffRoute {
    /// `moved_m`: how far the vehicle moved since the last observation;
    /// `detour_s`: what being off the path costs so far (NaN: unknown).
    pub fn observe(
        &mut self,
        c: &DetectConfig,
        time: f64,
        on_path: bool,
        moved_m: f64,
        detour_s: f64,
    ) -> Option<RouteChange> {
        if on_path {
            self.off_pings = 0;
            self.on_pings += 1;
            if self.off && self.on_pings >= c.on_route_pings {
                let since = self.off_since.unwrap_or(time);
                *self = Self::default();
                return Some(RouteChange::Rejoined(time - since));
            }
            if !self.off {
                self.off_since = None;
                self.off_m = 0.0;
            }
            return None;
        }
        self.on_pings = 0;
        self.off_pings += 1;
        self.off_since.get_or_insert(time);
        self.off_m += moved_m.max(0.0);
        if !self.off
            && self.off_pings >= c.off_route_pings
            && self.off_m >= c.off_route_m
            && detour_s >= c.off_route_detour_s
        {
            self.off = true;
            return Some(RouteChange::Left(detour_s));
        }
        None
    }

    /// The leg ended (arrived, route changed): seconds it was off, if it was.
    pub fn reset(&mut self, time: f64) -> Option<f64> {
        let was = self.off.then(|| time - self.off_since.unwrap_or(time));
        *self = Self::default();
        was
    }
}

/// `late` / `back_on_time` for one stop, from its ETA and window end.
pub fn lateness(c: &DetectConfig, late: bool, eta: f64, window_end: f64) -> Option<bool> {
    if !late && eta > window_end + c.late_margin_s {
        Some(true)
    } else if late && eta < window_end - c.on_time_margin_s {
        Some(false)
    } else {
        None
    }
}

/// Whether a stop's risk of missing its window changes: `Some(true)` when
/// `p_late` reaches `at_risk`, `Some(false)` when an at-risk stop's falls
/// below `at_risk_clear`.
pub fn risk(c: &DetectConfig, at_risk: bool, p_late: f64) -> Option<bool> {
    if !p_late.is_finite() {
        None
    } else if !at_risk && p_late >= c.at_risk {
        Some(true)
    } else if at_risk && p_late < c.at_risk_clear {
        Some(false)
    } else {
        None
    }
}

/// How long a `late` or `at_risk` condition must hold before it is raised
/// (see [`DetectConfig::confirm_s`]), for a stop whose P50 is `eta` and
/// whose window ends at `window_end`.
pub fn confirm_for(c: &DetectConfig, now: f64, eta: f64, window_end: f64) -> f64 {
    let hold = c.confirm_s.min(c.confirm_share * (eta - now));
    hold.min(window_end - now).max(0.0)
}

/// When a detector's condition began to hold, in whole seconds of event
/// time (0: it does not hold); four bytes, as it is kept per stop.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, Default, PartialEq,
)]
pub struct Pending(u32);

/// Holds a detector's raise back until its condition has held `hold`
/// seconds. `change` is what the detector says now, `raised` whether its
/// flag is up. Clearing passes at once.
pub fn confirm(
    pending: &mut Pending,
    change: Option<bool>,
    raised: bool,
    now: f64,
    hold: f64,
) -> Option<bool> {
    match change {
        Some(true) => {
            if pending.0 == 0 {
                // Saturating: event times are checked to be after 1970.
                pending.0 = now.floor().clamp(1.0, f64::from(u32::MAX)) as u32;
            }
            if now - f64::from(pending.0) >= hold {
                *pending = Pending::default();
                change
            } else {
                None
            }
        }
        _ => {
            if !raised {
                *pending = Pending::default();
            }
            change
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risk_thresholds_must_make_sense() {
        for (at_risk, clear) in [
            (0.0, 0.0),
            (1.0, 0.5),
            (0.3, 0.4),
            (0.3, -0.1),
            (f64::NAN, 0.1),
        ] {
            let c = DetectConfig {
                at_risk,
                at_risk_clear: clear,
                ..DetectConfig::default()
            };
            let e = c.validate().unwrap_err();
            assert!(e.contains("at_risk"), "{e}");
        }
    }

    #[test]
    fn risk_has_hysteresis() {
        let c = DetectConfig::default();
        assert_eq!(risk(&c, false, 0.2), None);
        assert_eq!(risk(&c, false, 0.35), Some(true));
        assert_eq!(risk(&c, true, 0.2), None, "between the thresholds: no flap");
        assert_eq!(risk(&c, true, 0.1), Some(false));
        assert_eq!(risk(&c, true, f64::NAN), None);
    }

    #[test]
    fn a_raise_waits_for_its_condition_to_hold() {
        let c = DetectConfig::default();
        // An hour out: a fifth of the time to go, at most ten minutes.
        assert_eq!(confirm_for(&c, 0.0, 3600.0, 4000.0), 600.0);
        assert_eq!(confirm_for(&c, 0.0, 1000.0, 900.0), 200.0);
        // Never past the window's end, and nothing once it has passed.
        assert_eq!(confirm_for(&c, 0.0, 3600.0, 100.0), 100.0);
        assert_eq!(confirm_for(&c, 500.0, 3600.0, 100.0), 0.0);
        let t0 = 1.8e9;
        let mut pending = Pending::default();
        let mut at =
            |change, raised, t: f64, hold| confirm(&mut pending, change, raised, t0 + t, hold);
        assert_eq!(at(Some(true), false, 0.0, 60.0), None);
        assert_eq!(at(Some(true), false, 30.0, 60.0), None);
        // The condition lapses: the wait begins again.
        assert_eq!(at(None, false, 40.0, 60.0), None);
        assert_eq!(at(Some(true), false, 50.0, 60.0), None);
        assert_eq!(at(Some(true), false, 109.0, 60.0), None);
        assert_eq!(at(Some(true), false, 110.0, 60.0), Some(true));
        // Clearing is not held.
        assert_eq!(at(Some(false), true, 111.0, 60.0), Some(false));
        // No wait asked: at once.
        assert_eq!(at(Some(true), false, 200.0, 0.0), Some(true));
        assert_eq!(pending, Pending::default());
    }

    #[test]
    fn shares_must_be_below_one() {
        for (eta_change_share, confirm_share, confirm_s) in [
            (1.0, 0.2, 600.0),
            (0.05, -0.1, 600.0),
            (0.05, 0.2, f64::NAN),
        ] {
            let c = DetectConfig {
                eta_change_share,
                confirm_share,
                confirm_s,
                ..DetectConfig::default()
            };
            assert!(c.validate().is_err());
        }
    }

    #[test]
    fn motion_has_hysteresis() {
        let c = DetectConfig::default();
        let mut m = Motion::new();
        assert!(!m.observe(&c, 0.0, 1.5));
        assert_eq!(m.since, 0.0);
        assert!(m.observe(&c, 1.0, 2.5));
        assert!(m.moving);
        // Between the thresholds: no flap.
        assert!(!m.observe(&c, 2.0, 1.2));
        assert!(m.observe(&c, 3.0, 0.5));
        assert_eq!(m.since, 3.0);
    }

    #[test]
    fn speeding_needs_margin_and_duration_and_fires_once() {
        let c = DetectConfig::default();
        let limit = Some(50.0 / 3.6);
        let mut s = Speeding::default();
        // 55 km/h: above the limit, under the margin.
        assert!((0..60).all(|t| !s.observe(&c, t as f64, 55.0 / 3.6, limit)));
        let mut s = Speeding::default();
        let fired: Vec<_> = (0..60)
            .filter(|&t| s.observe(&c, t as f64, 70.0 / 3.6, limit))
            .collect();
        assert_eq!(fired, [10]);
        // Hovering between limit and limit+margin keeps the episode; below the limit ends it.
        assert!(!s.observe(&c, 61.0, 52.0 / 3.6, limit));
        assert!(!s.observe(&c, 62.0, 45.0 / 3.6, limit));
        assert!((63..72).all(|t| !s.observe(&c, t as f64, 70.0 / 3.6, limit)));
        assert!(s.observe(&c, 73.0, 70.0 / 3.6, limit));
        // Unknown limit: no judgement.
        let mut s = Speeding::default();
        assert!((0..60).all(|t| !s.observe(&c, t as f64, 60.0, None)));
    }

    #[test]
    fn braking_needs_close_readings_and_has_a_refractory_time() {
        let c = DetectConfig::default();
        let mut b = Braking::default();
        assert_eq!(b.observe(&c, 0.0, 15.0), None);
        assert_eq!(
            b.observe(&c, 1.0, 10.0),
            None,
            "one second is too short a span"
        );
        assert_eq!(b.observe(&c, 2.0, 4.0), Some(5.5));
        assert_eq!(b.observe(&c, 3.0, 0.0), None, "refractory");
        // A firm but normal stop (3 m/s²) with noisy readings never fires,
        // nor a drop across a long gap.
        let mut b = Braking::default();
        let noise = [0.3, -0.3, 0.25, -0.2, 0.3, -0.3, 0.1, 0.0];
        assert!((0..8).all(|t| {
            b.observe(&c, t as f64, 21.0 - 3.0 * t as f64 + noise[t])
                .is_none()
        }));
        let mut b = Braking::default();
        b.observe(&c, 0.0, 15.0);
        assert_eq!(b.observe(&c, 10.0, 0.0), None);
    }

    #[test]
    fn off_route_needs_time_and_pings_and_rejoins_with_hysteresis() {
        let c = DetectConfig::default();
        let mut o = OffRoute::default();
        // A stray ping off the path, then back: nothing.
        assert_eq!(o.observe(&c, 0.0, false, 80.0, 100.0), None);
        assert_eq!(o.observe(&c, 20.0, true, 10.0, 0.0), None);
        // Standing off the path (a fix on the cross street at a light): nothing.
        assert!((21..60).all(|t| o.observe(&c, f64::from(t), false, 0.5, 100.0).is_none()));
        assert_eq!(o.observe(&c, 61.0, true, 0.0, 0.0), None);
        // A parallel street as fast as the plan: nothing however far.
        assert!((62..100).all(|t| o.observe(&c, f64::from(t), false, 30.0, 5.0).is_none()));
        assert_eq!(o.observe(&c, 101.0, true, 0.0, 0.0), None);
        // A real detour.
        assert_eq!(o.observe(&c, 102.0, false, 60.0, 20.0), None);
        assert_eq!(o.observe(&c, 103.0, false, 30.0, 80.0), None);
        assert_eq!(
            o.observe(&c, 104.0, false, 30.0, 100.0),
            Some(RouteChange::Left(100.0))
        );
        assert_eq!(o.observe(&c, 110.0, false, 30.0, 120.0), None);
        assert_eq!(o.observe(&c, 111.0, true, 10.0, 0.0), None);
        assert_eq!(
            o.observe(&c, 112.0, true, 10.0, 0.0),
            Some(RouteChange::Rejoined(10.0))
        );
        assert!(!o.off);
    }

    #[test]
    fn lateness_has_hysteresis() {
        let c = DetectConfig::default();
        assert_eq!(lateness(&c, false, 1000.0, 1000.0), None);
        assert_eq!(lateness(&c, false, 1001.0, 1000.0), Some(true));
        assert_eq!(lateness(&c, true, 950.0, 1000.0), None);
        assert_eq!(lateness(&c, true, 870.0, 1000.0), Some(false));
    }
}
