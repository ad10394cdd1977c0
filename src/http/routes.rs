//! All routes in one place: a table with one row per route (path, what each
//! method does and its handler, usual answers), the one gate that checks the
//! token before chaos, and the 404 / 405 answers.
//!
//! This is the junction of the tree: the one module of `http` that names the
//! handlers (and, with `server`, the `App`); the rest of `http` knows
//! nothing above `config`.

use std::time::Instant;

use crate::app::App;
use crate::handlers;
use crate::http::reply::Reply;
use crate::observe::metrics::Endpoint;

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

/// What a method does on a route, which decides the checks before its
/// handler runs. Every method of every row says it: there is no default, so a
/// new chaos route cannot skip the token check by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads state (probes, scrapes, listings): never guarded, never refused
    /// by the kill switch.
    Read,
    /// Starts the chaos action named (its `action` label): needs the token
    /// and `CHAOS_ENABLED`.
    Start(&'static str),
    /// Stops chaos (the action named, or `stop` for every fault): needs only
    /// the token, because an operator must always be able to stop.
    Stop(&'static str),
}

/// A handler: the app, the request's parts, and when the worker took it.
pub type Handler = fn(&App, &RequestLine<'_>, Instant) -> Reply;

/// One route: its path, what each allowed method does and which handler
/// serves it, and the answers whose counters exist from start-up. `GET`
/// also serves `HEAD`; every other method gets a 405 with `Allow`.
pub struct Route {
    /// The path, which is also the `endpoint` label.
    pub path: &'static str,
    pub methods: &'static [(Method, Effect, Handler)],
    /// The (method, status) pairs whose counters exist from start-up.
    pub usual_answers: &'static [(Method, u16)],
    /// Whether this route's latency is "user traffic" for the readiness p95.
    /// Probes, scrapes and chaos requests are not: a slow chaos request must
    /// not fail readiness on its own.
    pub feeds_readiness: bool,
}

use crate::chaos::registry::FaultKind;
use Effect::{Read, Start, Stop};
use Method::{Delete, Get, Post};

/// Every route, one row each. Adding an endpoint is adding a row.
pub static ROUTES: &[Route] = &[
    Route {
        path: "/",
        methods: &[(Get, Read, |app, _, now| handlers::root::get(app, now))],
        // The codes an errors fault answers too, so that the error ratio
        // has every series before the first fault.
        usual_answers: &[(Get, 200), (Get, 429), (Get, 500), (Get, 502), (Get, 503), (Get, 504)],
        feeds_readiness: true,
    },
    Route {
        path: "/health",
        methods: &[(Get, Read, |app, _, now| handlers::probes::health(app, now))],
        usual_answers: &[(Get, 200)],
        feeds_readiness: false,
    },
    Route {
        path: "/ready",
        methods: &[(Get, Read, |app, _, now| handlers::probes::ready(app, now))],
        usual_answers: &[(Get, 200), (Get, 503)],
        feeds_readiness: false,
    },
    Route {
        path: "/metrics",
        methods: &[(Get, Read, |app, _, now| handlers::scrape::metrics(app, now))],
        usual_answers: &[(Get, 200)],
        feeds_readiness: false,
    },
    Route {
        path: "/load/cpu",
        methods: &[
            (Post, Start("cpu"), |app, rq, now| {
                handlers::cpu::start(app, rq.query, now)
            }),
            (Delete, Stop("cpu"), |app, _, _| handlers::cpu::stop(app)),
        ],
        usual_answers: &[(Post, 202), (Post, 400), (Post, 401), (Post, 403), (Post, 429)],
        feeds_readiness: false,
    },
    Route {
        path: "/load/memory",
        methods: &[
            (Post, Start("memory"), |app, rq, now| {
                handlers::memory::leak(app, rq.query, now)
            }),
            (Delete, Stop("memory"), |app, _, _| handlers::memory::release(app)),
        ],
        usual_answers: &[
            (Post, 200),
            (Post, 400),
            (Post, 401),
            (Post, 403),
            (Post, 429),
            (Post, 507),
        ],
        feeds_readiness: false,
    },
    Route {
        path: "/load/disk",
        methods: &[
            (Post, Start("disk"), |app, rq, now| {
                handlers::disk::fill(app, rq.query, now)
            }),
            (Delete, Stop("disk"), |app, _, _| handlers::disk::remove(app)),
        ],
        usual_answers: &[
            (Post, 200),
            (Post, 202),
            (Post, 400),
            (Post, 401),
            (Post, 403),
            (Post, 409),
            (Post, 429),
            (Post, 507),
            (Delete, 200),
        ],
        feeds_readiness: false,
    },
    Route {
        path: "/crash",
        methods: &[(Post, Start("crash"), |app, rq, _| handlers::crash::crash(app, rq.query))],
        usual_answers: &[(Post, 202), (Post, 401), (Post, 403), (Post, 409)],
        feeds_readiness: false,
    },
    Route {
        path: "/fault/crashloop",
        methods: &[(Post, Start("crashloop"), |app, rq, now| {
            handlers::startup::crashloop(app, rq.query, now)
        })],
        usual_answers: &[(Post, 202), (Post, 400), (Post, 409), (Post, 429)],
        feeds_readiness: false,
    },
    Route {
        path: "/fault/slowstart",
        methods: &[
            (Post, Start("slowstart"), |app, rq, now| {
                handlers::startup::slowstart(app, rq.query, now)
            }),
            (Delete, Stop("slowstart"), |app, _, now| {
                handlers::startup::slowstart_end(app, now)
            }),
        ],
        usual_answers: &[(Post, 202), (Post, 400), (Post, 429), (Delete, 200)],
        feeds_readiness: false,
    },
    Route {
        path: "/load/latency",
        methods: &[
            (Post, Start("latency"), |app, rq, now| {
                handlers::faults::latency(app, rq.query, now)
            }),
            (Delete, Stop("latency"), |app, _, _| {
                handlers::faults::end(app, FaultKind::Latency)
            }),
        ],
        usual_answers: &[(Post, 202), (Post, 429), (Delete, 200)],
        feeds_readiness: false,
    },
    Route {
        path: "/fault/liveness",
        methods: &[
            (Post, Start("liveness"), |app, rq, now| {
                handlers::faults::liveness(app, rq.query, now)
            }),
            (Delete, Stop("liveness"), |app, _, _| {
                handlers::faults::end(app, FaultKind::Liveness)
            }),
        ],
        usual_answers: &[(Post, 202), (Post, 429), (Delete, 200)],
        feeds_readiness: false,
    },
    Route {
        path: "/fault/readiness",
        methods: &[
            (Post, Start("readiness"), |app, rq, now| {
                handlers::faults::readiness(app, rq.query, now)
            }),
            (Delete, Stop("readiness"), |app, _, _| {
                handlers::faults::end(app, FaultKind::Readiness)
            }),
        ],
        usual_answers: &[(Post, 202), (Post, 429), (Delete, 200)],
        feeds_readiness: false,
    },
    Route {
        path: "/fault/errors",
        methods: &[
            (Post, Start("errors"), |app, rq, now| {
                handlers::faults::errors(app, rq.query, now)
            }),
            (Delete, Stop("errors"), |app, _, _| {
                handlers::faults::end(app, FaultKind::Errors)
            }),
        ],
        usual_answers: &[(Post, 202), (Post, 400), (Post, 429), (Delete, 200)],
        feeds_readiness: false,
    },
    Route {
        path: "/chaos",
        methods: &[(Get, Read, |app, _, _| handlers::chaos::list(app))],
        usual_answers: &[(Get, 200)],
        feeds_readiness: false,
    },
    Route {
        path: "/chaos/stop",
        methods: &[(Post, Stop("stop"), |app, _, _| handlers::chaos::stop(app))],
        usual_answers: &[(Post, 200)],
        feeds_readiness: false,
    },
    Route {
        path: "/openapi.json",
        methods: &[(Get, Read, |_, _, _| handlers::openapi::get())],
        usual_answers: &[(Get, 200)],
        feeds_readiness: false,
    },
];

impl Route {
    /// The `endpoint` label of every path that matches no route.
    pub const UNMATCHED_LABEL: &'static str = "unmatched";

    pub fn from_path(path: &str) -> Option<&'static Route> {
        ROUTES.iter().find(|r| r.path == path)
    }

    /// The path, which is also the `endpoint` label.
    pub fn label(&self) -> &'static str {
        self.path
    }

    pub fn feeds_readiness(&self) -> bool {
        self.feeds_readiness
    }

    /// What `method` does here and its handler; `HEAD` is served as `GET`.
    pub fn method(&self, method: Method) -> Option<(Effect, Handler)> {
        let wanted = if method == Method::Head { Method::Get } else { method };
        self.methods
            .iter()
            .find(|(m, _, _)| *m == wanted)
            .map(|(_, effect, handler)| (*effect, *handler))
    }

    /// The `Allow` header of this route.
    pub fn allowed(&self) -> String {
        let names: Vec<&str> = self
            .methods
            .iter()
            .flat_map(|(m, _, _)| match m {
                Method::Get => vec!["GET", "HEAD"],
                other => vec![other.label()],
            })
            .collect();
        names.join(", ")
    }
}

/// The series of every endpoint that exist from start-up, unmatched paths
/// included, for `Metrics::new`.
pub fn endpoint_series() -> Vec<Endpoint> {
    ROUTES
        .iter()
        .map(|r| Endpoint {
            label: r.path,
            answers: r.usual_answers.iter().map(|(m, code)| (m.label(), *code)).collect(),
        })
        .chain([Endpoint {
            label: Route::UNMATCHED_LABEL,
            answers: vec![(Method::Get.label(), 404)],
        }])
        .collect()
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
    /// The absolute form (`http://host/health`), which RFC 9112 §3.2.2
    /// requires servers to accept, is routed by its path; the host is
    /// ignored.
    pub fn new(method: Method, target: &'a str) -> RequestLine<'a> {
        let target = origin_form(target);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = if path.is_empty() { "/" } else { path };
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

/// The path and query of a target in absolute form (`scheme://authority`
/// then path), or the target as it is.
fn origin_form(target: &str) -> &str {
    let Some((scheme, rest)) = target.split_once("://") else {
        return target;
    };
    let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !is_scheme {
        return target;
    }
    // `http://host` and `http://host?x=1` have an empty path: `new` makes it `/`.
    rest.find(['/', '?']).map_or("", |i| &rest[i..])
}

/// Picks and runs the handler. `now` is when the worker took the request.
pub fn dispatch(rq: &RequestLine<'_>, app: &App, now: Instant) -> Reply {
    let Some(route) = Route::from_path(rq.path) else {
        return Reply::not_found(rq.path);
    };
    let Some((effect, handler)) = route.method(rq.method) else {
        let name: String = rq.method_name.chars().take(32).collect();
        return Reply::method_not_allowed(&name, route.path, &route.allowed());
    };
    let admitted = match effect {
        Read => Ok(()),
        Start(action) => handlers::admit(app, action, rq.authorization, true),
        Stop(action) => handlers::admit(app, action, rq.authorization, false),
    };
    match admitted {
        Ok(()) => handler(app, rq, now),
        Err(refusal) => refusal,
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
    fn absolute_form_is_routed_by_its_path() {
        for (target, path, query) in [
            ("http://host/health", "/health", ""),
            ("HTTP://example.com:8080/load/cpu?duration=5", "/load/cpu", "duration=5"),
            ("https://h/", "/", ""),
            ("http://h", "/", ""),
            ("http://h?x=1", "/", "x=1"),
            ("http://user@h:1/ready?", "/ready", ""),
            ("/a://b", "/a://b", ""),
        ] {
            let rq = RequestLine::new(Method::Get, target);
            assert_eq!((rq.path, rq.query), (path, query), "{target}");
        }
    }

    #[test]
    fn routes_are_found_by_exact_path() {
        assert_eq!(Route::from_path("/health").map(Route::label), Some("/health"));
        assert!(Route::from_path("/health/").is_none());
        assert!(Route::from_path("/HEALTH").is_none());
        for r in ROUTES {
            assert!(std::ptr::eq(Route::from_path(r.path).unwrap(), r), "{} twice", r.path);
        }
    }

    /// Only reads go unguarded: a method that changes state and says
    /// `Read` would start or stop chaos without the token.
    #[test]
    fn every_method_but_get_is_a_guarded_start_or_stop() {
        for route in ROUTES {
            for (method, effect, _) in route.methods {
                let read = *effect == Read;
                assert_eq!(read, *method == Get, "{} {}: {effect:?}", method.label(), route.path);
            }
        }
    }

    #[test]
    fn every_started_action_has_its_metric_series() {
        for route in ROUTES {
            for (_, effect, _) in route.methods {
                if let Start(action) = effect {
                    assert!(
                        crate::observe::metrics::ACTIONS.contains(action),
                        "{action} not in metrics::ACTIONS"
                    );
                }
            }
        }
    }

    #[test]
    fn allow_lists_each_method_once_with_head_after_get() {
        let allow = |path| Route::from_path(path).unwrap().allowed();
        assert_eq!(allow("/health"), "GET, HEAD");
        assert_eq!(allow("/load/cpu"), "POST, DELETE");
        assert_eq!(allow("/chaos/stop"), "POST");
        assert!(Route::from_path("/crash").unwrap().method(Delete).is_none());
        assert!(Route::from_path("/ready").unwrap().method(Method::Head).is_some());
    }

    /// The gate reads the table: every method that starts or stops chaos,
    /// on every route (a new one included), is refused without the token,
    /// and starting is refused by the kill switch; reads are never refused.
    #[test]
    fn every_start_and_stop_needs_the_token_and_only_start_the_kill_switch() {
        let (app, _) = crate::app::testing::app("gate", &[("CHAOS_TOKEN", "s3cret"), ("CHAOS_ENABLED", "false")]);
        let now = Instant::now();
        for route in ROUTES {
            for (method, effect, _) in route.methods {
                // Reads are served even without a token; /crash is never
                // reached here with a token, so nothing ends the test process.
                let anonymous = RequestLine::new(*method, route.path);
                let status = dispatch(&anonymous, &app, now).status;
                let with_token = anonymous.clone().with_authorization(Some("Bearer s3cret"));
                match effect {
                    Read => assert_ne!(status, 401, "{} {}", method.label(), route.path),
                    Start(_) => {
                        assert_eq!(status, 401, "{} {} without a token", method.label(), route.path);
                        let status = dispatch(&with_token, &app, now).status;
                        assert_eq!(
                            status,
                            403,
                            "{} {} with CHAOS_ENABLED=false",
                            method.label(),
                            route.path
                        );
                    }
                    Stop(_) => {
                        assert_eq!(status, 401, "{} {} without a token", method.label(), route.path);
                        let status = dispatch(&with_token, &app, now).status;
                        assert_ne!(
                            status,
                            403,
                            "{} {}: stopping is never disabled",
                            method.label(),
                            route.path
                        );
                    }
                }
            }
        }
    }

    /// Once the ordered stop has begun, every method that starts chaos, on
    /// every route, is 503 naming the signal (after the token), and every
    /// stop and read still answers.
    #[test]
    fn after_the_signal_every_start_is_503_and_stops_and_reads_answer() {
        let (app, _) = crate::app::testing::app("gate-stop", &[("CHAOS_TOKEN", "s3cret")]);
        app.begin_shutdown("SIGTERM");
        let now = Instant::now();
        for route in ROUTES {
            for (method, effect, _) in route.methods {
                let anonymous = RequestLine::new(*method, route.path);
                let with_token = anonymous.clone().with_authorization(Some("Bearer s3cret"));
                let what = format!("{} {}", method.label(), route.path);
                let reply = dispatch(&with_token, &app, now);
                match effect {
                    Start(_) => {
                        assert_eq!(dispatch(&anonymous, &app, now).status, 401, "{what}");
                        assert_eq!(reply.status, 503, "{what}");
                        let error = reply.body_json()["error"].as_str().unwrap_or_default().to_string();
                        assert!(error.contains("SIGTERM"), "{what}: {error}");
                    }
                    // `/ready` is 503 too, for its own reason.
                    Stop(_) | Read => assert!(
                        reply.status != 503 || reply.body_json()["reason"] != "shutting_down",
                        "{what}"
                    ),
                }
            }
        }
        assert_eq!(app.registry.active(), 0);
    }

    /// The document lists exactly the (method, path) pairs the route table
    /// answers: a route added to the server and not to the document (or the
    /// reverse) fails here.
    #[test]
    fn document_matches_the_route_table() {
        let doc: serde_json::Value = serde_json::from_str(crate::handlers::openapi::DOCUMENT).unwrap();
        let documented: std::collections::BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| {
                        ["get", "head", "post", "put", "delete", "patch", "options", "trace"].contains(&k.as_str())
                    })
                    .map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let served: std::collections::BTreeSet<(String, String)> = ROUTES
            .iter()
            .flat_map(|r| {
                r.allowed()
                    .split(", ")
                    .map(|m| (m.to_string(), r.path.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(documented, served, "api/openapi.json against routes::ROUTES");
    }
}
