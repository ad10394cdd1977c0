//! The HTTP edge: the worker pool over tiny_http, the probe listener (a
//! port of its own for the probes), the route table, the reply type, query
//! parsing, the connection cap and budgets, and the
//! `healthcheck` client.

pub mod healthcheck;
pub mod limits;
pub mod probe_listener;
pub mod query;
pub mod reply;
pub mod routes;
pub mod server;
