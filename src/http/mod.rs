//! The HTTP edge: the worker pool over tiny_http, the route table, the reply
//! type, query parsing, the chaos token, the connection cap, and the
//! `healthcheck` client.

pub mod access;
pub mod healthcheck;
pub mod limits;
pub mod query;
pub mod reply;
pub mod routes;
pub mod server;
