//! `Control`: what the workers, the accept watch, the signal thread and a
//! deliberate panic tell `main`, over one channel that `main` owns.
//!
//! It has a module of its own so that the modules that send (`server`,
//! `signals`, `chaos::crash`) depend on it instead of on each other.

/// One message to `main`.
#[derive(Debug)]
pub enum Control {
    Signal(&'static str),
    /// `POST /crash?mode=panic`: main panics, so the process ends with 101.
    Panic(String),
    AcceptFailed(String),
    WorkerExited,
}
