//! `lastmile-ingest` will own the QUIC front end: the wire protocol codec,
//! authentication, backpressure, the server behind `lastmile serve` and the
//! client behind `lastmile replay` (see `../shared/DESIGN.md`).
//!
//! Nothing is built here yet; it holds no tracking logic and never will.
