//! All routes in one place: one `match` from (method, path) to a handler,
//! and the 404 / 405 answers.

use std::time::Instant;

use crate::app::App;
use crate::handlers;
use crate::http::Reply;

/// The request methods we tell apart; everything else is `Other`, so a
/// client cannot create metric series by inventing methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other,
}

impl Method {
    pub fn from_tiny(m: &tiny_http::Method) -> Method {
        use tiny_http::Method as M;
        match m {
            M::Get => Method::Get,
            M::Head => Method::Head,
            M::Post => Method::Post,
            M::Put => Method::Put,
            M::Delete => Method::Delete,
            M::Patch => Method::Patch,
            M::Options => Method::Options,
            _ => Method::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// The known paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Root,
    Health,
    Ready,
    Metrics,
    LoadCpu,
    LoadMemory,
    Crash,
    LoadLatency,
    FaultLiveness,
    FaultReadiness,
    Chaos,
    ChaosStop,
}

impl Route {
    pub const ALL: [Route; 12] = [
        Route::Root,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::LoadCpu,
        Route::LoadMemory,
        Route::Crash,
        Route::LoadLatency,
        Route::FaultLiveness,
        Route::FaultReadiness,
        Route::Chaos,
        Route::ChaosStop,
    ];

    /// The `endpoint` label of every path that matches no route.
    pub const UNMATCHED_LABEL: &'static str = "unmatched";

    pub fn from_path(path: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.label() == path)
    }

    /// The path, which is also the `endpoint` label.
    pub fn label(self) -> &'static str {
        match self {
            Route::Root => "/",
            Route::Health => "/health",
            Route::Ready => "/ready",
            Route::Metrics => "/metrics",
            Route::LoadCpu => "/load/cpu",
            Route::LoadMemory => "/load/memory",
            Route::Crash => "/crash",
            Route::LoadLatency => "/load/latency",
            Route::FaultLiveness => "/fault/liveness",
            Route::FaultReadiness => "/fault/readiness",
            Route::Chaos => "/chaos",
            Route::ChaosStop => "/chaos/stop",
        }
    }

    /// The `Allow` header of this route.
    pub fn allowed(self) -> &'static str {
        match self {
            Route::Root | Route::Health | Route::Ready | Route::Metrics | Route::Chaos => "GET, HEAD",
            Route::LoadCpu | Route::LoadMemory | Route::LoadLatency | Route::FaultLiveness | Route::FaultReadiness => {
                "POST, DELETE"
            }
            Route::Crash | Route::ChaosStop => "POST",
        }
    }

    /// The chaos action a route starts (its `action` label), if any.
    pub fn chaos_action(self) -> Option<&'static str> {
        match self {
            Route::LoadCpu => Some("cpu"),
            Route::LoadMemory => Some("memory"),
            Route::Crash => Some("crash"),
            Route::LoadLatency => Some("latency"),
            Route::FaultLiveness => Some("liveness"),
            Route::FaultReadiness => Some("readiness"),
            _ => None,
        }
    }

    /// Whether this route's latency is "user traffic" for the readiness p95.
    /// Probes, scrapes and chaos requests are not: a slow chaos request must
    /// not fail readiness on its own.
    pub fn feeds_readiness(self) -> bool {
        self == Route::Root
    }

    /// The (method, status) pairs whose counters exist from start-up.
    pub fn usual_answers(self) -> &'static [(Method, u16)] {
        match self {
            Route::Root | Route::Health | Route::Metrics | Route::Chaos => &[(Method::Get, 200)],
            Route::LoadLatency | Route::FaultLiveness | Route::FaultReadiness => {
                &[(Method::Post, 202), (Method::Post, 429), (Method::Delete, 200)]
            }
            Route::ChaosStop => &[(Method::Post, 200)],
            Route::Ready => &[(Method::Get, 200), (Method::Get, 503)],
            Route::LoadCpu => &[
                (Method::Post, 202),
                (Method::Post, 400),
                (Method::Post, 401),
                (Method::Post, 403),
                (Method::Post, 429),
            ],
            Route::LoadMemory => &[
                (Method::Post, 200),
                (Method::Post, 400),
                (Method::Post, 401),
                (Method::Post, 403),
                (Method::Post, 429),
                (Method::Post, 507),
            ],
            Route::Crash => &[
                (Method::Post, 202),
                (Method::Post, 401),
                (Method::Post, 403),
                (Method::Post, 409),
            ],
        }
    }
}

/// What the router needs of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLine<'a> {
    pub method: Method,
    pub path: &'a str,
    pub query: &'a str,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The method as sent, for error messages (`method` is bounded).
    pub method_name: &'a str,
}

impl<'a> RequestLine<'a> {
    /// Splits a request target (`/load/cpu?duration=5`) into path and query.
    pub fn new(method: Method, target: &'a str) -> RequestLine<'a> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        RequestLine {
            method,
            path,
            query,
            authorization: None,
            method_name: method.label(),
        }
    }

    pub fn with_method_name(mut self, name: &'a str) -> RequestLine<'a> {
        self.method_name = name;
        self
    }

    pub fn with_authorization(mut self, value: Option<&'a str>) -> RequestLine<'a> {
        self.authorization = value;
        self
    }
}

/// Picks and runs the handler. `now` is when the worker took the request.
pub fn dispatch(rq: &RequestLine<'_>, app: &App, now: Instant) -> Reply {
    let Some(route) = Route::from_path(rq.path) else {
        return Reply::not_found(rq.path);
    };
    use Method::{Delete, Get, Head, Post};
    // Starting chaos needs the token and the kill switch on; stopping it
    // needs only the token (an operator must always be able to stop).
    let starts = rq.method == Post && route.chaos_action().is_some();
    let stops =
        (rq.method == Delete && route.chaos_action().is_some()) || (rq.method == Post && route == Route::ChaosStop);
    if starts || stops {
        let action = route.chaos_action().unwrap_or("stop");
        if let Err(reply) = handlers::admit(app, action, rq.authorization, starts) {
            return reply;
        }
    }
    use crate::chaos::faults::Kind;
    match (rq.method, route) {
        (Get | Head, Route::Root) => handlers::root::get(app, now),
        (Get | Head, Route::Health) => handlers::probes::health(app, now),
        (Get | Head, Route::Ready) => handlers::probes::ready(app, now),
        (Get | Head, Route::Metrics) => handlers::scrape::metrics(app, now),
        (Post, Route::LoadCpu) => handlers::cpu::start(app, rq.query, now),
        (Post, Route::LoadMemory) => handlers::memory::leak(app, rq.query, now),
        (Post, Route::Crash) => handlers::crash::crash(app, rq.query),
        (Delete, Route::LoadCpu) => handlers::cpu::stop(app),
        (Delete, Route::LoadMemory) => handlers::memory::release(app),
        (Post, Route::LoadLatency) => handlers::faults::start(app, Kind::Latency, rq.query, now),
        (Post, Route::FaultLiveness) => handlers::faults::start(app, Kind::Liveness, rq.query, now),
        (Post, Route::FaultReadiness) => handlers::faults::start(app, Kind::Readiness, rq.query, now),
        (Delete, Route::LoadLatency) => handlers::faults::end(app, Kind::Latency),
        (Delete, Route::FaultLiveness) => handlers::faults::end(app, Kind::Liveness),
        (Delete, Route::FaultReadiness) => handlers::faults::end(app, Kind::Readiness),
        (Get | Head, Route::Chaos) => handlers::chaos::list(app),
        (Post, Route::ChaosStop) => handlers::chaos::stop(app),
        (_, route) => {
            let name: String = rq.method_name.chars().take(32).collect();
            Reply::method_not_allowed(&name, route.label(), route.allowed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_target() {
        let rq = RequestLine::new(Method::Post, "/load/cpu?duration=5");
        assert_eq!(rq.path, "/load/cpu");
        assert_eq!(rq.query, "duration=5");
        assert_eq!(RequestLine::new(Method::Get, "/").query, "");
    }

    #[test]
    fn routes_are_found_by_exact_path() {
        assert_eq!(Route::from_path("/health"), Some(Route::Health));
        assert_eq!(Route::from_path("/health/"), None);
        assert_eq!(Route::from_path("/HEALTH"), None);
        for r in Route::ALL {
            assert_eq!(Route::from_path(r.label()), Some(r));
        }
    }
}
