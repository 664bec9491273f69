//! The server's notion of "now" in event time. The engine runs on the
//! pings' own timestamps, so a replay of last Tuesday behaves as it did on
//! Tuesday; the server's clock is therefore the latest accepted ping time
//! (the watermark), never ahead of the wall clock, and the wall clock until
//! the first ping. Ticks, commands without a time, and new ETAs use it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub struct Clock {
    /// Bits of the f64 watermark (0.0 = no ping yet).
    watermark: AtomicU64,
}

pub fn wall_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Clock {
    /// Seconds since the epoch.
    pub fn now(&self) -> f64 {
        let w = f64::from_bits(self.watermark.load(Relaxed));
        let wall = wall_s();
        if w > 0.0 { w.min(wall) } else { wall }
    }

    /// The latest accepted ping time, if any ping came yet.
    pub fn watermark(&self) -> Option<f64> {
        let w = f64::from_bits(self.watermark.load(Relaxed));
        (w > 0.0).then_some(w)
    }

    /// Moves the watermark forward to `t` (never back).
    pub fn observe(&self, t: f64) {
        if t.is_nan() || t <= 0.0 {
            return;
        }
        let _ = self.watermark.fetch_update(Relaxed, Relaxed, |cur| {
            (t > f64::from_bits(cur)).then_some(t.to_bits())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_moves_forward_only_and_never_past_the_wall_clock() {
        let c = Clock::default();
        assert!((c.now() - wall_s()).abs() < 5.0);
        c.observe(1_000.0);
        assert_eq!(c.now(), 1_000.0);
        c.observe(500.0);
        c.observe(f64::NAN);
        assert_eq!(c.now(), 1_000.0);
        c.observe(wall_s() + 3_600.0);
        assert!(c.now() <= wall_s());
    }
}
