//! A log-linear latency histogram (16 sub-buckets per power of two, so any
//! quantile is within about 6% of the true value), cheap to record into and
//! to merge: each shard keeps one and the engine sums them.

use std::time::Duration;

const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

fn bucket(ns: u64) -> usize {
    let e = 63 - (ns | 1).leading_zeros();
    if e < SUB_BITS {
        ns as usize
    } else {
        let sub = ((ns >> (e - SUB_BITS)) as usize) & (SUB - 1);
        (e - SUB_BITS + 1) as usize * SUB + sub
    }
}

/// The smallest value of a bucket.
fn lower(b: usize) -> u64 {
    if b < SUB {
        b as u64
    } else {
        let e = (b / SUB) as u32 + SUB_BITS - 1;
        (1u64 << e) | (((b % SUB) as u64) << (e - SUB_BITS))
    }
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(ns)] += 1;
        self.total += 1;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// Adds `other` into this one and empties it.
    pub fn merge_from(&mut self, other: &mut Histogram) {
        if other.total == 0 {
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter_mut()) {
            *a += *b;
            *b = 0;
        }
        self.total += other.total;
        other.total = 0;
    }

    /// The value at quantile `q` (0–1), as the midpoint of its bucket.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = (lower(b), lower(b + 1).max(lower(b) + 1));
                return Duration::from_nanos(lo + (hi - lo) / 2);
            }
        }
        Duration::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_quantiles_within_a_bucket() {
        for ns in [0u64, 1, 15, 16, 17, 1000, 123_456, 9_999_999_999] {
            let b = bucket(ns);
            assert!(
                lower(b) <= ns && ns < lower(b + 1),
                "{ns}: {} {}",
                lower(b),
                lower(b + 1)
            );
        }
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).as_secs_f64() * 1e6;
        let p99 = h.quantile(0.99).as_secs_f64() * 1e6;
        assert!((p50 - 500.0).abs() < 500.0 * 0.07, "{p50}");
        assert!((p99 - 990.0).abs() < 990.0 * 0.07, "{p99}");
        let mut sum = Histogram::default();
        sum.merge_from(&mut h);
        assert_eq!((sum.count(), h.count()), (1000, 0));
    }
}
