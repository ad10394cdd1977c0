//! The faults the service injects into itself: CPU load, a memory leak, a
//! disk fill, probe and latency faults, and a crash. `registry` owns every
//! running fault (its slot, its threads, its end); handlers decide whether a
//! fault may start and hand it to the registry; the other modules carry it
//! out.

pub mod cpu;
pub mod crash;
pub mod crash_marker;
pub mod disk;
pub mod faults;
pub mod guard;
pub mod memory;
pub mod registry;
