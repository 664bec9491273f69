//! Per-vehicle buffers that give back room they no longer use.
//!
//! A fleet holds several small queues per vehicle (steps, candidates, held
//! pings, points waiting to be smoothed). Each grows to what the vehicle
//! needed once (a long stand, a dense burst) and would keep that room for
//! the rest of the day. A [`HighWater`] remembers the most a buffer held
//! since it was last trimmed; the engine's periodic trim shrinks the buffer
//! to that mark, so room a vehicle keeps using is never reallocated and room
//! it stopped using (a stand that ended) goes back to the allocator.

use std::collections::VecDeque;

/// The most elements a buffer held since its last trim.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, Default)]
pub(crate) struct HighWater(u32);

/// A buffer whose capacity can be given back.
pub(crate) trait Shrink {
    fn len(&self) -> usize;
    fn capacity(&self) -> usize;
    fn shrink_to(&mut self, min: usize);
}

impl<T> Shrink for VecDeque<T> {
    fn len(&self) -> usize {
        VecDeque::len(self)
    }
    fn capacity(&self) -> usize {
        VecDeque::capacity(self)
    }
    fn shrink_to(&mut self, min: usize) {
        VecDeque::shrink_to(self, min);
    }
}

impl<T> Shrink for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }
    fn shrink_to(&mut self, min: usize) {
        Vec::shrink_to(self, min);
    }
}

impl HighWater {
    /// Notes the buffer's length after it grew.
    #[inline]
    pub fn saw(&mut self, len: usize) {
        self.0 = self.0.max(u32::try_from(len).unwrap_or(u32::MAX));
    }

    /// Shrinks `buf` to the mark (at least `min`) when it holds half as
    /// much room again or more, and starts a new mark from its length.
    pub fn trim(&mut self, buf: &mut impl Shrink, min: usize) {
        let want = (self.0 as usize).max(buf.len()).max(min);
        if buf.capacity() > want + want / 2 {
            buf.shrink_to(want);
        }
        self.0 = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_in_use_is_kept_and_room_left_unused_is_given_back() {
        let mut q: VecDeque<u64> = VecDeque::new();
        let mut mark = HighWater::default();
        for i in 0..100 {
            q.push_back(i);
            mark.saw(q.len());
        }
        q.drain(..90);
        // Held 100 since the last trim: nothing is given back yet.
        let before = q.capacity();
        mark.trim(&mut q, 0);
        assert_eq!(q.capacity(), before);
        // Since then it held at most 10.
        mark.trim(&mut q, 0);
        assert!(q.capacity() < 16, "{}", q.capacity());
        assert_eq!(
            q.iter().copied().collect::<Vec<_>>(),
            (90..100).collect::<Vec<_>>()
        );
        // Emptied: all of it goes back, unless a floor is asked for.
        q.clear();
        mark.trim(&mut q, 0);
        mark.trim(&mut q, 0);
        assert_eq!(q.capacity(), 0);
        let mut v: Vec<u8> = Vec::with_capacity(64);
        let mut mark = HighWater::default();
        mark.trim(&mut v, 8);
        assert!((8..12).contains(&v.capacity()), "{}", v.capacity());
    }
}
