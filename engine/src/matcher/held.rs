//! The pings that made no step of their own: those of a standing vehicle,
//! each finalised with the step it was held with, at the place that step's
//! group of held pings stood last (its latest centroid); and outliers,
//! whose fix was refused, finalised where the path the vehicle drove puts
//! it at their time (the finalised stream has a point for every ping).
//!
//! A vehicle parked for half an hour holds dozens of them, so a ping costs
//! only its sequence number and time (16 bytes); the position is kept once
//! per group, as the one that placing the group uses.

use std::collections::VecDeque;

use lastmile_roadgraph::LatLon;

use super::high_water::HighWater;

/// The held pings of one step, in arrival order.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug)]
struct Group {
    /// Sequence number of the step they are held with.
    step: u64,
    /// Where the group's newest ping placed the standing vehicle.
    pos: LatLon,
    len: u32,
}

/// A held ping: what its finalised point needs of it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub(crate) struct HeldPing {
    /// Sequence number, with [`OUTLIER`] set for an outlier.
    tagged_seq: u64,
    pub time: f64,
}

/// Tag of an outlier's sequence number (sequence numbers count pings, and
/// never get near it).
const OUTLIER: u64 = 1 << 63;

impl HeldPing {
    pub fn new(seq: u64, time: f64, outlier: bool) -> Self {
        debug_assert!(seq & OUTLIER == 0);
        let tag = if outlier { OUTLIER } else { 0 };
        Self {
            tagged_seq: seq | tag,
            time,
        }
    }

    pub fn seq(&self) -> u64 {
        self.tagged_seq & !OUTLIER
    }

    /// A refused fix, placed by its time rather than by the group's place.
    pub fn is_outlier(&self) -> bool {
        self.tagged_seq & OUTLIER != 0
    }
}

/// Held pings, oldest first, grouped by the step they are held with.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Default)]
pub(crate) struct Held {
    groups: VecDeque<Group>,
    pings: VecDeque<HeldPing>,
    peak_groups: HighWater,
    peak_pings: HighWater,
}

impl Held {
    /// Holds a ping with step `step` (at least as new as any held so far),
    /// the standing vehicle at `pos`.
    pub fn push(&mut self, step: u64, seq: u64, time: f64, pos: LatLon) {
        self.hold(step, HeldPing::new(seq, time, false), Some(pos));
    }

    /// Holds an outlier with step `step` (the newest step before it); the
    /// group's place stays what its standing pings made it.
    pub fn push_outlier(&mut self, step: u64, seq: u64, time: f64) {
        self.hold(step, HeldPing::new(seq, time, true), None);
    }

    fn hold(&mut self, step: u64, ping: HeldPing, pos: Option<LatLon>) {
        match self.groups.back_mut() {
            Some(g) if g.step == step => {
                if let Some(p) = pos {
                    g.pos = p;
                }
                g.len += 1;
            }
            _ => {
                debug_assert!(self.groups.back().is_none_or(|g| g.step < step));
                // A group of outliers alone has no place of its own.
                let pos = pos.unwrap_or(LatLon::new(f64::NAN, f64::NAN));
                self.groups.push_back(Group { step, pos, len: 1 });
                self.peak_groups.saw(self.groups.len());
            }
        }
        self.pings.push_back(ping);
        self.peak_pings.saw(self.pings.len());
    }

    /// The step the newest held pings belong to.
    pub fn newest_step(&self) -> Option<u64> {
        self.groups.back().map(|g| g.step)
    }

    /// Takes the pings held with `step` if they are the oldest held, with
    /// the place of the group; `None` when none are.
    pub fn take(&mut self, step: u64) -> Option<(LatLon, impl Iterator<Item = HeldPing> + '_)> {
        let g = self.groups.front().filter(|g| g.step == step).copied()?;
        self.groups.pop_front();
        Some((g.pos, self.pings.drain(..g.len as usize)))
    }

    pub fn clear(&mut self) {
        self.groups.clear();
        self.pings.clear();
    }

    /// Gives back the room of stands that ended: a moving vehicle holds
    /// nothing, and its next stand grows the queues again.
    pub fn shrink(&mut self) {
        self.peak_pings.trim(&mut self.pings, 0);
        self.peak_groups.trim(&mut self.groups, 0);
    }

    /// Heap bytes held (allocated capacity).
    pub fn heap_bytes(&self) -> usize {
        self.pings.capacity() * std::mem::size_of::<HeldPing>()
            + self.groups.capacity() * std::mem::size_of::<Group>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_come_back_in_order_with_their_newest_place() {
        let mut h = Held::default();
        let (a, b, c) = (
            LatLon::new(1.0, 1.0),
            LatLon::new(2.0, 2.0),
            LatLon::new(3.0, 3.0),
        );
        h.push(4, 5, 50.0, a);
        h.push(4, 6, 60.0, b);
        h.push(7, 8, 80.0, c);
        assert_eq!(h.newest_step(), Some(7));
        // Only the oldest group can be taken.
        assert!(h.take(7).is_none());
        let (pos, pings) = h.take(4).unwrap();
        let pings: Vec<_> = pings.collect();
        assert_eq!(pos, b);
        assert_eq!(
            pings,
            [HeldPing::new(5, 50.0, false), HeldPing::new(6, 60.0, false)]
        );
        let (pos, pings) = h.take(7).unwrap();
        assert_eq!((pos, pings.count()), (c, 1));
        assert!(h.take(7).is_none() && h.newest_step().is_none());
        // An outlier joins the group of its step without moving its place,
        // and keeps its sequence number and tag.
        h.push(9, 10, 100.0, a);
        h.push_outlier(9, 11, 110.0);
        h.push_outlier(12, 13, 130.0);
        let (pos, pings) = h.take(9).unwrap();
        let pings: Vec<_> = pings.collect();
        assert_eq!(pos, a);
        assert_eq!(
            pings
                .iter()
                .map(|p| (p.seq(), p.is_outlier()))
                .collect::<Vec<_>>(),
            [(10, false), (11, true)]
        );
        let (pos, pings) = h.take(12).unwrap();
        assert!(pos.lat.is_nan());
        assert_eq!(pings.map(|p| p.seq()).collect::<Vec<_>>(), [13]);
        h.push(9, 10, 100.0, a);
        h.clear();
        assert!(h.newest_step().is_none() && h.take(9).is_none());
    }
}
