//! What the service tells about itself: Prometheus metrics, readiness and
//! its latency window, the recovery events, the healing figures, and the
//! bound on what clients can make it log.

pub mod connection_metrics;
pub mod events;
pub mod healing;
pub mod kept;
pub mod latency;
pub mod metrics;
pub mod process;
pub mod readiness;
pub mod registering;
pub mod state_file;
pub mod throttle;
