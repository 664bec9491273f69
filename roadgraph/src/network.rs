//! The raw road network: what an importer or generator hands to the graph
//! builder. Nodes are dense indices with coordinates; ways are node sequences
//! with car attributes; turn restrictions name OSM ways and a via node.
//!
//! Both the OSM importer and the synthetic city produce this, so everything
//! downstream (junction splitting, strong connectivity, renumbering, snapshot)
//! is one code path, tested once.

use crate::highway::WayAttributes;

/// A node whose coordinates are unknown (a way referenced a node missing from
/// the extract). The builder cuts ways at such nodes.
pub const MISSING_COORD: i32 = i32::MIN;

#[derive(Clone, Debug, Default)]
pub struct RawNetwork {
    /// Latitude per raw node, 1e-7 degrees (or [`MISSING_COORD`]).
    pub lat: Vec<i32>,
    /// Longitude per raw node, 1e-7 degrees (or [`MISSING_COORD`]).
    pub lon: Vec<i32>,
    pub ways: Vec<RawWay>,
    pub restrictions: Vec<RawRestriction>,
    /// Raw node indices of traffic signals, sorted.
    pub signals: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct RawWay {
    /// OSM way id (synthetic ids for generated cities).
    pub id: i64,
    /// Raw node indices in way order.
    pub nodes: Vec<u32>,
    pub attrs: WayAttributes,
}

/// Whether a turn restriction forbids one turn or mandates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RestrictionKind {
    /// `no_*`: the turn from `from` to `to` at `via` is forbidden.
    No = 0,
    /// `only_*`: from `from` at `via`, the only turns allowed go to `to`.
    Only = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRestriction {
    pub kind: RestrictionKind,
    /// `no_u_turn` / `only_u_turn`: the turn goes back onto the same road.
    pub u_turn: bool,
    pub from_way: i64,
    /// Raw node index of the via node.
    pub via: u32,
    pub to_way: i64,
}

impl RawNetwork {
    /// Adds a node and returns its index.
    pub fn add_node(&mut self, lat: i32, lon: i32) -> u32 {
        self.lat.push(lat);
        self.lon.push(lon);
        (self.lat.len() - 1) as u32
    }
}
