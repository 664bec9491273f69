//! When ETAs route again. A leg's path is computed once and advanced along
//! per ping; it is searched again when the vehicle leaves it, when a new
//! traffic metric moved its time by more than `reroute_change`, and on a
//! periodic refresh every `refresh_s`, at a phase fixed per vehicle so the
//! fleet's refreshes spread evenly over time.

use super::VehicleId;
use super::window::WindowParams;

#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtaConfig {
    /// Seconds between periodic refreshes of a vehicle's leg (0: never).
    pub refresh_s: f64,
    /// A traffic change that makes a path slower by more than this fraction
    /// routes it again (smaller changes only retime the same path).
    pub reroute_change: f64,
    /// Stops farther than this from any road are refused, metres.
    pub stop_snap_m: f64,
    /// The searches a metric update calls for are spread over this many
    /// seconds (retimed ETAs are right at once; a better path can wait).
    pub reroute_spread_s: f64,
    /// Arrival windows (see [`super::window`]): a vehicle notes its next
    /// stop's routed time every half of that time (at least every
    /// `window_note_s`), and a later stop's every `window_note_s`, while
    /// fewer than `window_notes` wait for their stops (half of them at most
    /// for later stops).
    pub window_note_s: f64,
    pub window_notes: usize,
    /// Outcomes remembered per horizon class at most (effective count);
    /// their fading in event time (time constant, s), which stops at
    /// `window_min_outcomes`.
    pub window_memory: f64,
    pub window_memory_s: f64,
    pub window_min_outcomes: f64,
    /// The prior the first outcomes outweigh: its weight in outcomes, and
    /// its spread (standard deviation of ln(actual / routed)).
    pub window_prior_weight: f64,
    pub window_prior_spread: f64,
}

impl Default for EtaConfig {
    fn default() -> Self {
        Self {
            refresh_s: 600.0,
            reroute_change: 0.1,
            stop_snap_m: 250.0,
            reroute_spread_s: 300.0,
            window_note_s: 60.0,
            window_notes: 8,
            window_memory: 1000.0,
            window_memory_s: 1800.0,
            window_min_outcomes: 100.0,
            window_prior_weight: 20.0,
            window_prior_spread: 0.25,
        }
    }
}

impl EtaConfig {
    pub fn window_params(&self) -> WindowParams {
        WindowParams {
            memory: self.window_memory,
            memory_s: self.window_memory_s,
            min_outcomes: self.window_min_outcomes,
            prior_weight: self.window_prior_weight,
            prior_spread: self.window_prior_spread,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let snap_ok = self.stop_snap_m.is_finite() && self.stop_snap_m > 0.0;
        let change_ok = self.reroute_change.is_finite() && self.reroute_change >= 0.0;
        if !snap_ok || !change_ok {
            return Err(
                "eta.stop_snap_m must be positive and eta.reroute_change not negative".into(),
            );
        }
        let window_ok = self.window_note_s.is_finite()
            && self.window_note_s > 0.0
            && (1..=32).contains(&self.window_notes)
            && self.window_memory.is_finite()
            && self.window_memory >= 10.0
            && self.window_memory_s.is_finite()
            && self.window_memory_s > 0.0
            && self.window_min_outcomes.is_finite()
            && (1.0..=self.window_memory).contains(&self.window_min_outcomes)
            && self.window_prior_weight.is_finite()
            && self.window_prior_weight > 0.0
            && self.window_prior_spread.is_finite()
            && (0.01..=2.0).contains(&self.window_prior_spread);
        if !window_ok {
            return Err("eta.window_note_s must be positive, eta.window_notes 1 to 32, \
                 eta.window_memory at least 10, eta.window_memory_s positive, \
                 eta.window_min_outcomes 1 to eta.window_memory, eta.window_prior_weight positive and \
                 eta.window_prior_spread 0.01 to 2"
                .into());
        }
        Ok(())
    }

    /// The vehicle's next refresh after `now`: its own phase within the
    /// period, from a hash of its id.
    pub fn next_refresh(&self, vehicle: VehicleId, now: f64) -> f64 {
        if self.refresh_s <= 0.0 {
            return f64::INFINITY;
        }
        let phase = phase(vehicle) * self.refresh_s;
        let k = ((now - phase) / self.refresh_s).floor() + 1.0;
        phase + k * self.refresh_s
    }

    /// The vehicle's delay before searching paths a metric update made stale.
    pub fn spread(&self, vehicle: VehicleId) -> f64 {
        phase(vehicle) * self.reroute_spread_s
    }
}

/// A fixed fraction 0–1 per vehicle, from a hash of its id.
fn phase(vehicle: VehicleId) -> f64 {
    let h = vehicle.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    h as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_settings_out_of_range_are_refused_by_name() {
        assert!(EtaConfig::default().validate().is_ok());
        let bad = [
            EtaConfig {
                window_notes: 0,
                ..EtaConfig::default()
            },
            EtaConfig {
                window_note_s: f64::NAN,
                ..EtaConfig::default()
            },
            EtaConfig {
                window_memory: 5.0,
                ..EtaConfig::default()
            },
            EtaConfig {
                window_min_outcomes: 5000.0,
                ..EtaConfig::default()
            },
            EtaConfig {
                window_prior_spread: 0.0,
                ..EtaConfig::default()
            },
        ];
        for c in bad {
            let e = c.validate().unwrap_err();
            assert!(e.contains("eta.window_"), "{e}");
        }
    }

    #[test]
    fn refreshes_are_periodic_and_staggered() {
        let c = EtaConfig::default();
        let t = c.next_refresh(7, 1000.0);
        assert!(t > 1000.0 && t <= 1600.0);
        assert_eq!(c.next_refresh(7, t), t + 600.0);
        // Phases spread over the period.
        let mut phases: Vec<f64> = (0..1000).map(|v| c.next_refresh(v, 0.0)).collect();
        phases.sort_by(f64::total_cmp);
        assert!(
            phases[100] < 90.0 && phases[900] > 510.0,
            "{} {}",
            phases[100],
            phases[900]
        );
    }
}
