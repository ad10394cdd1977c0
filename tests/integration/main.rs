//! Integration tests: each runs the real binary on a loopback port and
//! checks what a user would see (status codes, bodies, metrics, RSS, CPU
//! time, exit signals).

mod api;
mod attacks;
mod balancer;
mod bench;
mod chaos;
mod config;
mod connections;
mod container;
mod contract;
mod disk;
mod docs;
mod emulation;
mod engines;
mod errors;
mod faults;
mod fork;
mod guardrails;
mod hardening;
mod harness;
mod heads;
mod healing;
mod image;
mod lifecycle;
mod manifests;
mod matrix;
mod observability;
mod observer;
mod observer_dns;
mod openapi;
mod probes;
mod promtool;
mod registry;
mod scripts;
mod shutdown;
mod signals;
mod startup;
