//! `POST /load/cpu?duration=S&millicores=M`: starts a CPU load and answers
//! 202 at once; the load runs on its own threads.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::{bad, start_fault};
use crate::app::App;
use crate::chaos::cpu::{CpuBudget, LoadPlan};
use crate::chaos::registry::{Ended, FaultKind, Running};
use crate::config::MAX_DURATION_SECONDS;
use crate::http::query::Query;
use crate::http::reply::Reply;
use crate::observe::events::{Event, unix_ms};

pub const PARAMETERS: &[&str] = &["duration", "millicores"];

pub fn start(app: &App, raw_query: &str, now: Instant) -> Reply {
    start_with_budget(app, raw_query, now, CpuBudget::detect())
}

fn start_with_budget(app: &App, raw_query: &str, now: Instant, budget: CpuBudget) -> Reply {
    let (plan, duration) = match parse(app, raw_query, &budget) {
        Ok(parsed) => parsed,
        Err(reply) => return reply,
    };
    // A saturating load counts what the process may use.
    let (mode, millicores) = match plan {
        LoadPlan::Saturate { .. } => ("saturate", budget.millicores()),
        LoadPlan::Millicores { millicores, .. } => ("millicores", millicores),
    };
    let started_ms = unix_ms(SystemTime::now());
    let details = json!({
        "action": "cpu",
        "mode": mode,
        "millicores": millicores,
        "threads": plan.threads(),
        "duration_seconds": duration.as_secs(),
        "started_at_unix_ms": started_ms,
        "ends_at_unix_ms": started_ms + duration.as_millis() as u64,
    });
    if let Err(reply) = launch(app, plan, mode, millicores, duration, &details, now) {
        return reply;
    }
    let mut body = details;
    body["status"] = json!("started");
    Reply::accepted(&body)
}

/// The load asked for and how long it lasts, or the 400 that names the
/// parameter; `millicores` is bounded by what the process may use.
fn parse(app: &App, raw_query: &str, budget: &CpuBudget) -> Result<(LoadPlan, Duration), Reply> {
    let query = Query::parse(raw_query, PARAMETERS).map_err(bad)?;
    let duration = query
        .bounded("duration", 1, MAX_DURATION_SECONDS, "seconds")
        .map_err(bad)?
        .map_or(app.config.cpu_load_duration, Duration::from_secs);
    let plan = match query
        .bounded(
            "millicores",
            1,
            budget.millicores(),
            "millicores (this process may use at most this many)",
        )
        .map_err(bad)?
    {
        Some(m) => LoadPlan::millicores(m),
        None => LoadPlan::saturate(budget),
    };
    Ok((plan, duration))
}

/// Starts the load's threads as a registry fault; it ends itself on time.
fn launch(
    app: &App,
    plan: LoadPlan,
    mode: &'static str,
    millicores: u64,
    duration: Duration,
    details: &Value,
    now: Instant,
) -> Result<u64, Reply> {
    let (loads, events) = (Arc::clone(&app.cpu), Arc::clone(&app.events));
    start_fault(app, FaultKind::Cpu, now, Some(duration), |ticket| {
        events.emit(Event::ChaosStarted, details.clone());
        let ender = ticket.clone();
        let finished = Arc::clone(&events);
        // cpu_stress_active is read off the running loads at each scrape.
        let on_end = move |ran: Duration| {
            finished.emit(
                Event::ChaosFinished,
                json!({"action": "cpu", "mode": mode, "ran_seconds": ran.as_secs_f64()}),
            );
            ender.finish(Ended::OnTime);
        };
        let thread = loads
            .start(plan, millicores, duration, ticket.cancel.clone(), on_end)
            .map_err(|e| format!("cannot start CPU load threads: {e}"))?;
        Ok(Running {
            threads: vec![thread],
            cleanup: Box::new(|_| {}),
            detail: match plan {
                LoadPlan::Saturate { .. } => "saturate".to_string(),
                LoadPlan::Millicores { millicores, .. } => format!("millicores={millicores}"),
            },
            ends_at: Some(SystemTime::now() + duration),
            extra: json!({"millicores": millicores}),
        })
    })
}

/// `DELETE /load/cpu`: ends every running load, and answers once their
/// threads have stopped.
pub fn stop(app: &App) -> Reply {
    let loads = app.registry.stop(Some(FaultKind::Cpu), Ended::OnRequest).len();
    Reply::ok(&json!({"status": if loads > 0 { "stopped" } else { "not active" }, "loads": loads}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing;

    const TWO_CPUS: CpuBudget = CpuBudget {
        affinity_cpus: 2,
        quota_millicores: None,
    };

    #[test]
    fn bad_parameters_are_400_and_start_nothing() {
        let (app, _) = testing::app("cpu-bad", &[]);
        for (query, fragment) in [
            ("duration=abc", "invalid duration \"abc\""),
            ("millicores=0", "invalid millicores \"0\""),
            ("millicores=2001", "from 1 to 2000"),
            ("duration=3601", "invalid duration \"3601\""),
            ("speed=9", "unknown parameter \"speed\""),
        ] {
            let r = start_with_budget(&app, query, Instant::now(), TWO_CPUS);
            assert_eq!(r.status, 400, "{query}");
            assert!(
                r.body_json()["error"].as_str().unwrap().contains(fragment),
                "{query}: {:?}",
                r.body_json()
            );
        }
        assert_eq!(app.cpu.active(), 0);
        assert_eq!(app.registry.active(), 0);
    }

    #[test]
    fn second_load_is_refused_while_first_runs() {
        let (app, events) = testing::app("cpu-guard", &[("CHAOS_COOLDOWN_SECONDS", "0")]);
        let now = Instant::now();
        let r = start_with_budget(&app, "duration=1&millicores=10", now, TWO_CPUS);
        assert_eq!(r.status, 202, "{:?}", r.body_json());
        let body = r.body_json();
        assert_eq!(body["mode"], "millicores");
        assert_eq!(body["threads"], 1);
        let r = start_with_budget(&app, "duration=1", now, TWO_CPUS);
        assert_eq!(r.status, 429);
        // The load ends at 1 s (a start then waits out its clean-up).
        assert_eq!(r.headers, vec![("Retry-After", "1".to_string())]);
        assert_eq!(stop(&app).body_json()["loads"], 1);
        assert_eq!(app.cpu.active(), 0, "stopped before the answer");
        assert_eq!(events.event_names()[..2], ["CHAOS_STARTED", "CHAOS_REJECTED"]);
    }
}
