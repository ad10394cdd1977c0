//! The floor for the HTTP benchmarks: a bare tiny_http hello-world with the
//! same pool shape as the service (one `Arc<Server>`, N worker threads, each
//! `for rq in server.incoming_requests()`), answering every request with a
//! fixed JSON body. Whatever the service does beyond this is its overhead.
//!
//! Its own package (bench/floor), built against unpatched crates.io
//! tiny_http: the service uses a patched copy, and the floor must not move
//! with it.
//!
//! usage: floor PORT [WORKERS]

use std::sync::Arc;
use std::thread;

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .expect("usage: floor PORT [WORKERS]");
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(4);
    let server = Arc::new(tiny_http::Server::http(("127.0.0.1", port)).expect("bind"));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let server = Arc::clone(&server);
            thread::spawn(move || {
                let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
                    .expect("static header");
                for rq in server.incoming_requests() {
                    let response =
                        tiny_http::Response::from_string("{\"status\":\"healthy\"}\n").with_header(header.clone());
                    let _ = rq.respond(response);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
