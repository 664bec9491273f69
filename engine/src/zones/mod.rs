//! Zones a fleet draws (the depot, a customer's yard, a restricted city
//! centre, the area its vans may work in): their shapes, found by position,
//! and how a vehicle stands to them.
//!
//! - [`def`] is a zone as a dispatcher gives it and the journal keeps it.
//! - [`hours`] says when a fleet's vehicles may move, in its time zone.
//! - [`shape`] checks a circle or a polygon with holes when it is made, and
//!   gives the signed distance from a point to its border.
//! - [`index`] keeps a fleet's zones in a grid, so that a position tests
//!   only the zones near it.
//! - [`presence`] follows one vehicle in and out of them, with a margin on
//!   either side of each border so that driving along it does not flap,
//!   and tells entries, leavings and dwells.

pub mod def;
pub mod hours;
pub mod index;
pub mod presence;
pub mod shape;

pub use def::{Outline, ZoneDef, ZoneError, ZoneKind};
pub use hours::WorkingHours;
pub use index::{Zone, ZoneId, ZoneSet};
pub use presence::{Judging, Presence, ZoneChange, ZoneEvent};
pub use shape::{Bounds, Shape, ShapeError};
