//! The faults the service injects into itself: CPU load (`cpu`), a memory
//! leak (`memory`), a disk fill (`disk`), probe and latency faults
//! (`faults`), a crash (`crash`, with its `crash_marker`), the start-up
//! faults kept in STATE_DIR (`startup`: a crash loop, a slow start) and the
//! seeded random crash (`random_crash`). `registry`
//! owns every running fault (its guardrail slot from `guard`, its threads,
//! its end); handlers decide whether a fault may start and hand it to the
//! registry; the other modules carry it out. Nothing here knows of HTTP.

pub mod cpu;
pub mod crash;
pub mod crash_marker;
pub mod disk;
pub mod faults;
pub mod guard;
pub mod memory;
pub mod random_crash;
pub mod registry;
pub mod startup;
