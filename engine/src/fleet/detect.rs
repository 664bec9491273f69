//! The exception detectors: small state machines, one per concern, each with
//! hysteresis so a value hovering at a threshold does not make events flap.
//! They see one vehicle's observations in event time and say when to fire;
//! the vehicle turns that into an [`Event`](super::Event).

/// Detector thresholds. Times in seconds, speeds in m/s, distances in metres.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectConfig {
    /// `eta_changed` when a stop's ETA moved this far from the last one announced.
    pub eta_change_s: f64,
    /// `late` when the ETA passes the window end by more than this…
    pub late_margin_s: f64,
    /// …and `back_on_time` only once it is this far back inside the window.
    pub on_time_margin_s: f64,
    /// `off_route` after this long and this many pings off the planned path…
    pub off_route_s: f64,
    pub off_route_pings: u32,
    /// …`back_on_route` after this many consecutive pings on it.
    pub on_route_pings: u32,
    /// `arrived` inside this radius of a stop while slower than `arrive_speed`;
    /// `departed` once beyond `depart_radius` (larger: hysteresis).
    pub arrive_radius_m: f64,
    pub arrive_speed_mps: f64,
    pub depart_radius_m: f64,
    /// `stalled` after standing this long away from any stop while one is due.
    pub stall_s: f64,
    /// `speeding` when above the legal limit by this many km/h for `speeding_for_s`;
    /// over until below the limit itself.
    pub speeding_margin_kmh: f64,
    pub speeding_for_s: f64,
    /// `harsh_braking` on a deceleration above this between two speed
    /// readings at most `braking_max_interval_s` apart; then quiet for
    /// `braking_refractory_s`.
    pub harsh_braking_mps2: f64,
    pub braking_max_interval_s: f64,
    pub braking_refractory_s: f64,
    /// `offline` after this long without a ping.
    pub offline_s: f64,
    /// Moving above `moving_mps`, stopped below `stopped_mps` (hysteresis).
    pub moving_mps: f64,
    pub stopped_mps: f64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            eta_change_s: 120.0,
            late_margin_s: 0.0,
            on_time_margin_s: 120.0,
            off_route_s: 15.0,
            off_route_pings: 2,
            on_route_pings: 2,
            arrive_radius_m: 50.0,
            arrive_speed_mps: 2.0,
            depart_radius_m: 100.0,
            stall_s: 300.0,
            speeding_margin_kmh: 10.0,
            speeding_for_s: 10.0,
            harsh_braking_mps2: 3.5,
            braking_max_interval_s: 3.0,
            braking_refractory_s: 10.0,
            offline_s: 120.0,
            moving_mps: 2.0,
            stopped_mps: 1.0,
        }
    }
}

impl DetectConfig {
    /// Rejects settings that would make detectors meaningless.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("eta_change_s", self.eta_change_s),
            ("off_route_s", self.off_route_s),
            ("arrive_radius_m", self.arrive_radius_m),
            ("stall_s", self.stall_s),
            ("speeding_for_s", self.speeding_for_s),
            ("harsh_braking_mps2", self.harsh_braking_mps2),
            ("braking_max_interval_s", self.braking_max_interval_s),
            ("offline_s", self.offline_s),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number, got {v}"));
            }
        }
        if self.depart_radius_m < self.arrive_radius_m {
            return Err("depart_radius_m must be at least arrive_radius_m".into());
        }
        if self.moving_mps < self.stopped_mps {
            return Err("moving_mps must be at least stopped_mps".into());
        }
        Ok(())
    }
}

/// Moving or stopped, with hysteresis, and since when.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Motion {
    pub moving: bool,
    /// When the current state began (event time).
    pub since: f64,
}

impl Motion {
    /// Takes a speed reading; true when the state changed.
    pub fn observe(&mut self, c: &DetectConfig, time: f64, speed: f64) -> bool {
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
#[derive(Clone, Copy, Debug, Default, PartialEq)]
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

/// `harsh_braking`: the drop between two close speed readings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Braking {
    last: Option<(f64, f64)>,
    quiet_until: f64,
}

impl Braking {
    /// Returns the deceleration (m/s²) when it should fire.
    pub fn observe(&mut self, c: &DetectConfig, time: f64, speed: f64) -> Option<f64> {
        let prev = self.last.replace((time, speed));
        let (t0, v0) = prev?;
        let dt = time - t0;
        if dt <= 0.0 || dt > c.braking_max_interval_s || time < self.quiet_until {
            return None;
        }
        let decel = (v0 - speed) / dt;
        (decel > c.harsh_braking_mps2).then(|| {
            self.quiet_until = time + c.braking_refractory_s;
            decel
        })
    }
}

/// `off_route` / `back_on_route` against the planned path.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OffRoute {
    off_since: Option<f64>,
    off_pings: u32,
    on_pings: u32,
    pub off: bool,
}

/// What [`OffRoute::observe`] decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RouteChange {
    /// Seconds off so far.
    Left(f64),
    /// Seconds it was off.
    Rejoined(f64),
}

impl OffRoute {
    pub fn observe(&mut self, c: &DetectConfig, time: f64, on_path: bool) -> Option<RouteChange> {
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
            }
            return None;
        }
        self.on_pings = 0;
        self.off_pings += 1;
        let since = *self.off_since.get_or_insert(time);
        if !self.off && self.off_pings >= c.off_route_pings && time - since >= c.off_route_s {
            self.off = true;
            return Some(RouteChange::Left(time - since));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn motion_has_hysteresis() {
        let c = DetectConfig::default();
        let mut m = Motion::default();
        assert!(!m.observe(&c, 0.0, 1.5));
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
        assert_eq!(b.observe(&c, 1.0, 10.0), Some(5.0));
        assert_eq!(b.observe(&c, 2.0, 4.0), None, "refractory");
        // A gentle stop never fires, nor a drop across a long gap.
        let mut b = Braking::default();
        assert!((0..8).all(|t| b.observe(&c, t as f64, 14.0 - 2.0 * t as f64).is_none()));
        let mut b = Braking::default();
        b.observe(&c, 0.0, 15.0);
        assert_eq!(b.observe(&c, 10.0, 0.0), None);
    }

    #[test]
    fn off_route_needs_time_and_pings_and_rejoins_with_hysteresis() {
        let c = DetectConfig::default();
        let mut o = OffRoute::default();
        // One stray ping off the path, then back: nothing.
        assert_eq!(o.observe(&c, 0.0, false), None);
        assert_eq!(o.observe(&c, 20.0, true), None);
        assert_eq!(o.observe(&c, 21.0, false), None);
        assert_eq!(o.observe(&c, 30.0, false), None);
        assert_eq!(o.observe(&c, 36.0, false), Some(RouteChange::Left(15.0)));
        assert_eq!(o.observe(&c, 40.0, false), None);
        assert_eq!(o.observe(&c, 41.0, true), None);
        assert_eq!(o.observe(&c, 42.0, true), Some(RouteChange::Rejoined(21.0)));
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
