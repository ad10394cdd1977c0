//! What the service tells about itself: Prometheus metrics, readiness and
//! its latency window, the recovery events, and the healing figures.

pub mod connection_metrics;
pub mod events;
pub mod healing;
pub mod kept;
pub mod latency;
pub mod metrics;
pub mod readiness;
pub mod registering;
pub mod state_file;
