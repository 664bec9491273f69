//! `lastmile-engine` will own the sans-IO tracking core: the online map matcher,
//! vehicle/route/stop state in shards, incremental ETAs, traffic learning,
//! detectors and events, and the live-vehicle index (see `../shared/DESIGN.md`).
//!
//! Nothing is built here yet; the crate exists so the workspace has its final
//! shape and dependencies point one way (ingest → engine → roadgraph).
