//! What the matcher reports: each ping's status and live estimate, the
//! finalised points and path pieces, and the per-thread counters.

use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::graph::NO_EDGE;

/// What became of one ping.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
)]
pub enum MatchStatus {
    /// On a road, continuing the chain.
    #[default]
    Matched,
    /// On a road, but the chain was broken before it (gap, teleport) and restarts here.
    Reset,
    /// On a road that no road from the chain's position leads to (the
    /// vehicle left a dead end the map cut off, or came back onto the map
    /// elsewhere): the path breaks and a new chain starts here at once,
    /// rather than the fixes being refused as outliers first.
    Break,
    /// No road within the search radius: no position is given (never a wrong snap).
    Unmatched,
    /// Cannot be reached from the chain at any plausible speed: dropped.
    Outlier,
    /// Earlier than a ping already accepted for the vehicle: dropped.
    OutOfOrder,
    /// Same time as the previous accepted ping: dropped.
    Duplicate,
    /// Non-finite or out-of-range coordinates or time: dropped.
    Invalid,
}

impl MatchStatus {
    pub const ALL: [MatchStatus; 8] = [
        Self::Matched,
        Self::Reset,
        Self::Break,
        Self::Unmatched,
        Self::Outlier,
        Self::OutOfOrder,
        Self::Duplicate,
        Self::Invalid,
    ];

    /// The name used in CSV output and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Matched => "matched",
            Self::Reset => "reset",
            Self::Break => "break",
            Self::Unmatched => "unmatched",
            Self::Outlier => "outlier",
            Self::OutOfOrder => "out_of_order",
            Self::Duplicate => "duplicate",
            Self::Invalid => "invalid",
        }
    }

    /// True when the ping was placed on a road.
    pub fn is_on_road(self) -> bool {
        matches!(self, Self::Matched | Self::Reset | Self::Break)
    }
}

/// The live estimate for one ping, available as soon as it is pushed.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The ping's sequence number within its vehicle (0, 1, 2, … in push order).
    pub seq: u64,
    pub time: f64,
    pub status: MatchStatus,
    /// The matched edge ([`NO_EDGE`] unless the status is on a road).
    pub edge: u32,
    pub offset_m: f64,
    pub point: LatLon,
    /// Posterior probability of the matched road among the candidates, 0–1.
    pub confidence: f32,
}

impl Default for Estimate {
    fn default() -> Self {
        Self {
            seq: 0,
            time: 0.0,
            status: MatchStatus::Invalid,
            edge: NO_EDGE,
            offset_m: 0.0,
            point: LatLon::new(f64::NAN, f64::NAN),
            confidence: 0.0,
        }
    }
}

/// A finalised match of one ping: will not change any more.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct FinalPoint {
    pub seq: u64,
    pub time: f64,
    /// `Matched`; `Reset` for the first point of a new chain; `Outlier` for
    /// a fix the chain refused, placed where the path puts the vehicle at
    /// its time (between the steps before and after it).
    pub status: MatchStatus,
    pub edge: u32,
    pub offset_m: f64,
    pub point: LatLon,
    /// Distance from the ping to the matched point, metres (NaN for an
    /// outlier, whose fix is not kept).
    pub distance_m: f64,
}

/// A piece of the finalised path: part or all of one edge, driven between two
/// times. Consecutive pieces of one chain are connected (each starts where
/// the previous ended); whole-edge pieces carry observed traversal times.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Traversal {
    pub edge: u32,
    pub from_m: f64,
    pub to_m: f64,
    pub t_start: f64,
    pub t_end: f64,
}

/// Everything one push produced. Reuse one per thread: `push` clears it.
#[derive(Clone, Debug, Default)]
pub struct MatchOutput {
    pub immediate: Estimate,
    pub finalized: Vec<FinalPoint>,
    pub path: Vec<Traversal>,
}

impl MatchOutput {
    pub(super) fn clear(&mut self) {
        self.immediate = Estimate::default();
        self.finalized.clear();
        self.path.clear();
    }
}

/// Counters per thread (summed by whoever reports them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatcherStats {
    pub pings: u64,
    /// Pings per [`MatchStatus`], indexed as [`MatchStatus::ALL`].
    pub by_status: [u64; MatchStatus::ALL.len()],
    /// Finalisations forced by `max_lag` before the hypotheses converged.
    pub forced: u64,
    pub searches: u64,
    pub settled: u64,
}

impl MatcherStats {
    pub fn count(&self, s: MatchStatus) -> u64 {
        self.by_status[s as usize]
    }
}
