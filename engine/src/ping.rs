//! The GPS ping: one position report of one vehicle, in event time.

use lastmile_roadgraph::LatLon;

/// One position report. Optional fields are what phones and telematics boxes
/// usually send alongside the position; the matcher uses them when present.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ping {
    /// Event time, seconds since the Unix epoch (fractional allowed).
    pub time: f64,
    pub pos: LatLon,
    /// Ground speed reported by the device, m/s.
    pub speed: Option<f32>,
    /// Course over ground, degrees clockwise from north.
    pub heading: Option<f32>,
    /// Horizontal accuracy reported by the device, metres (about one sigma).
    pub accuracy: Option<f32>,
}

impl Ping {
    pub fn new(time: f64, pos: LatLon) -> Self {
        Self {
            time,
            pos,
            speed: None,
            heading: None,
            accuracy: None,
        }
    }

    /// Speed if reported and physically meaningful.
    pub fn valid_speed(&self) -> Option<f64> {
        self.speed
            .filter(|s| s.is_finite() && (0.0..=150.0).contains(s))
            .map(f64::from)
    }

    /// Heading if reported and finite, normalised to `[0, 360)`.
    pub fn valid_heading(&self) -> Option<f64> {
        self.heading
            .filter(|h| h.is_finite())
            .map(|h| f64::from(h).rem_euclid(360.0))
    }

    /// Accuracy if reported and plausible (a device that claims 0 m or a
    /// kilometre is not telling us anything usable).
    pub fn valid_accuracy(&self) -> Option<f64> {
        self.accuracy
            .filter(|a| a.is_finite() && *a > 0.0 && *a <= 1000.0)
            .map(f64::from)
    }
}
