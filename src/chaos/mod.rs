//! The faults the service injects into itself: CPU load, a memory leak, and
//! a crash. Handlers in `routes` decide whether a fault may start; the code
//! here only carries it out.

pub mod cpu;
pub mod crash;
pub mod faults;
pub mod memory;
pub mod registry;
