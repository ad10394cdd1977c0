//! The operating system: libc calls, `/proc` and the cgroup files. The only
//! `unsafe` code of the crate lives here (each file allows it for itself).

pub mod cgroup;
pub mod poll;
pub mod signals;
pub mod sys;
