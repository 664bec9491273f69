//! Customer milestones: the moments a notification system tells a customer
//! about ("out for delivery", "you are next", "arriving in about ten
//! minutes", "delivered", "we missed you", "rescheduled").
//!
//! Each stop keeps which of the first three it has had in this attempt.
//! They come in that order, each at most once: `out_for_delivery` once the
//! vehicle is under way with the stop on its route, `next_stop` once the
//! stop is the next one (after `out_for_delivery`), `arriving` once its ETA
//! is under the configured threshold (after `next_stop`). An arrival sends
//! whichever of the three are still missing, at once and in order, so a
//! customer whose van got there before the ETA said so still hears it; a
//! stop closed first does not get them late. `delivered` and
//! `failed_attempt` close the attempt. A dispatcher changing the stop's
//! promised window sends `rescheduled` and begins a new attempt: the first
//! three may come again, in order. The latch is the hysteresis: an ETA that
//! dips under the threshold and back never sends `arriving` twice.

use super::events::EventKind;
use super::stops::StopStatus;

/// The milestones a stop has had in its current attempt.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub(crate) struct Milestones(u8);

/// What the vehicle and the stop look like now, for [`Milestones::advance`].
pub(crate) struct Situation {
    /// The vehicle has been moving for a while (not a flicker at a light).
    pub under_way: bool,
    pub status: StopStatus,
    /// Seconds from now to the stop's ETA (NaN unknown).
    pub eta_in: f64,
    /// `arriving` once `eta_in` is at most this.
    pub arriving_s: f64,
}

impl Milestones {
    const OUT: u8 = 1;
    const NEXT: u8 = 2;
    const ARRIVING: u8 = 4;
    const ORDER: [(u8, EventKind); 3] = [
        (Self::OUT, EventKind::OutForDelivery),
        (Self::NEXT, EventKind::NextStop),
        (Self::ARRIVING, EventKind::Arriving),
    ];

    /// All three sent: nothing more until a new attempt.
    pub fn complete(self) -> bool {
        self.0 == Self::OUT | Self::NEXT | Self::ARRIVING
    }

    /// Marks the milestones due in situation `s` as sent and returns them
    /// in the order they are to be emitted.
    pub fn advance(&mut self, s: &Situation) -> impl Iterator<Item = EventKind> + use<> {
        let before = self.0;
        if !s.status.is_closed() {
            let arrived = s.status == StopStatus::Arrived;
            let next = s.status == StopStatus::Next;
            if s.under_way || arrived {
                self.0 |= Self::OUT;
            }
            if self.0 & Self::OUT != 0 && (next || arrived) {
                self.0 |= Self::NEXT;
            }
            if self.0 & Self::NEXT != 0 && (arrived || (next && s.eta_in <= s.arriving_s)) {
                self.0 |= Self::ARRIVING;
            }
        }
        let new = self.0 & !before;
        Self::ORDER
            .into_iter()
            .filter(move |(bit, _)| new & bit != 0)
            .map(|(_, kind)| kind)
    }

    /// A new attempt (the promised window changed).
    pub fn restart(&mut self) {
        self.0 = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(under_way: bool, status: StopStatus, eta_in: f64) -> Situation {
        Situation {
            under_way,
            status,
            eta_in,
            arriving_s: 600.0,
        }
    }

    fn advance(m: &mut Milestones, s: Situation) -> Vec<EventKind> {
        m.advance(&s).collect()
    }

    #[test]
    fn a_stop_goes_through_its_milestones_in_order_once() {
        let mut m = Milestones::default();
        // Loading at the depot: nothing yet.
        assert!(advance(&mut m, at(false, StopStatus::Next, 3000.0)).is_empty());
        assert_eq!(
            advance(&mut m, at(true, StopStatus::Next, 3000.0)),
            [EventKind::OutForDelivery, EventKind::NextStop]
        );
        assert!(advance(&mut m, at(true, StopStatus::Next, 700.0)).is_empty());
        assert_eq!(
            advance(&mut m, at(true, StopStatus::Next, 590.0)),
            [EventKind::Arriving]
        );
        // The ETA going back up and down again sends nothing more.
        assert!(advance(&mut m, at(true, StopStatus::Next, 900.0)).is_empty());
        assert!(advance(&mut m, at(true, StopStatus::Next, 100.0)).is_empty());
        assert!(advance(&mut m, at(false, StopStatus::Arrived, 0.0)).is_empty());
        assert!(m.complete());
    }

    #[test]
    fn a_later_stop_waits_for_its_turn() {
        let mut m = Milestones::default();
        assert_eq!(
            advance(&mut m, at(true, StopStatus::Pending, 200.0)),
            [EventKind::OutForDelivery]
        );
        // Close in time but not next: not "arriving".
        assert!(advance(&mut m, at(true, StopStatus::Pending, 100.0)).is_empty());
        assert_eq!(
            advance(&mut m, at(false, StopStatus::Next, 100.0)),
            [EventKind::NextStop, EventKind::Arriving]
        );
    }

    #[test]
    fn an_arrival_sends_what_is_missing_and_a_closed_stop_nothing() {
        let mut m = Milestones::default();
        assert_eq!(
            advance(&mut m, at(false, StopStatus::Arrived, f64::NAN)),
            [
                EventKind::OutForDelivery,
                EventKind::NextStop,
                EventKind::Arriving
            ]
        );
        let mut closed = Milestones::default();
        assert!(advance(&mut closed, at(true, StopStatus::Completed, 0.0)).is_empty());
        assert!(advance(&mut closed, at(true, StopStatus::Failed, 0.0)).is_empty());
    }

    #[test]
    fn an_unknown_eta_is_not_arriving_and_a_new_attempt_starts_over() {
        let mut m = Milestones::default();
        assert_eq!(
            advance(&mut m, at(true, StopStatus::Next, f64::NAN)),
            [EventKind::OutForDelivery, EventKind::NextStop]
        );
        m.restart();
        assert_eq!(
            advance(&mut m, at(true, StopStatus::Next, 10.0)),
            [
                EventKind::OutForDelivery,
                EventKind::NextStop,
                EventKind::Arriving
            ]
        );
    }
}
