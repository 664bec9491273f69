//! Zones a fleet draws (the depot, a customer's yard, a restricted city
//! centre, the area its vans may work in): their shapes and how a position
//! stands to them. [`shape`] checks a circle or a polygon with holes when
//! it is made, and gives the signed distance from a point to its border,
//! which the zone detectors read with a margin so that a vehicle driving
//! along a border does not flap in and out.

pub mod shape;

pub use shape::{Bounds, Shape, ShapeError};
