//! The faults the service injects into itself: CPU load (`cpu`), a memory
//! leak (`memory`), a disk fill (`disk`), probe and latency faults
//! (`faults`), and a crash (`crash`, with its `crash_marker`). `registry`
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
pub mod registry;
