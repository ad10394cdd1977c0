//! `POST /load/disk?mb=N&ramp=S&keep=true` fills the disk under
//! `DISK_FILL_DIR`; `DELETE /load/disk` removes the fill.
//!
//! Without `ramp` the answer waits for the writing to end, because it
//! reports what was written: 200, or 507 when the disk ran out (the partial
//! file removed unless `keep=true`). The guardrail allows one chaos action at
//! a time by default, so at most one worker waits here (96 MiB take about a
//! second on a slow disk). With `ramp` the answer is 202 and a thread writes
//! over S seconds; if the disk runs out then, the fault ends on its own and
//! the CHAOS_FINISHED event, `GET /chaos` (`ended`) and
//! `chaos_disk_fill_ended_total{reason}` say why.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::{bad, size_detail, start_fault};
use crate::app::App;
use crate::chaos::disk::{EndReason, FillOutcome, OnEnd};
use crate::chaos::registry::{Ended, FaultKind, Running};
use crate::config::{MAX_DURATION_SECONDS, MAX_MB};
use crate::http::query::Query;
use crate::http::reply::Reply;
use crate::observe::events::{Event, unix_ms};

pub const PARAMETERS: &[&str] = &["mb", "ramp", "keep"];

/// The size written when `mb` is not given: 1.5 times the Deployment's
/// emptyDir `sizeLimit` (64Mi), so that the default trips the eviction; see
/// manifests/deployment.yaml for the whole arithmetic.
pub const DEFAULT_MB: u64 = 96;

/// What a `POST /load/disk` asks for.
struct FillRequest {
    mb: u64,
    ramp: Option<Duration>,
    keep: bool,
}

impl FillRequest {
    fn bytes(&self) -> u64 {
        self.mb << 20
    }
}

pub fn fill(app: &App, raw_query: &str, now: Instant) -> Reply {
    let fill = match parse(raw_query) {
        Ok(fill) => fill,
        Err(reply) => return reply,
    };
    if let Some(why) = app.disk.unavailable() {
        return Reply::json(503, &json!({"error": format!("disk fill unavailable: {why}")}));
    }
    let dir = app.disk.dir().display().to_string();
    let (done, at) = match launch(app, &fill, &dir, now) {
        Ok(launched) => launched,
        Err(reply) => return reply,
    };
    match fill.ramp {
        Some(ramp) => Reply::accepted(&json!({
            "status": "filling",
            "action": "disk",
            "mb": fill.mb,
            "bytes": fill.bytes(),
            "keep": fill.keep,
            "dir": dir,
            "ramp_seconds": ramp.as_secs(),
            "ends_at_unix_ms": unix_ms(at) + ramp.as_millis() as u64,
        })),
        // The writer has recorded the outcome (and ended the entry if
        // nothing is left on disk) before sending it.
        None => match done.recv() {
            Ok(outcome) => written(app, &fill, &dir, outcome),
            Err(_) => Reply::internal_error("the disk fill writer ended without a result"),
        },
    }
}

/// The fill asked for, or the 400 that names the parameter.
fn parse(raw_query: &str) -> Result<FillRequest, Reply> {
    let query = Query::parse(raw_query, PARAMETERS).map_err(bad)?;
    let mb = query.bounded("mb", 1, MAX_MB, "MiB").map_err(bad)?;
    let ramp = query.bounded("ramp", 1, MAX_DURATION_SECONDS, "seconds").map_err(bad)?;
    let keep = query.choice("keep", &["true", "false"]).map_err(bad)?;
    Ok(FillRequest {
        mb: mb.unwrap_or(DEFAULT_MB),
        ramp: ramp.map(Duration::from_secs),
        keep: keep == Some("true"),
    })
}

/// Starts the fill's writer as a registry fault; returns the channel its
/// outcome comes on, and when it started. A fill stays until it is removed
/// (DELETE, /chaos/stop, SIGTERM), as a leak does, and holds its guardrail
/// slot that long: `expected` is None.
fn launch(
    app: &App,
    fill: &FillRequest,
    dir: &str,
    now: Instant,
) -> Result<(Receiver<FillOutcome>, SystemTime), Reply> {
    let FillRequest { mb, ramp, keep } = *fill;
    let bytes = fill.bytes();
    let started = json!({"action": "disk", "mb": mb, "bytes": bytes, "ramp_seconds": ramp.map(|r| r.as_secs()), "keep": keep, "dir": dir});
    let (disk, events) = (Arc::clone(&app.disk), Arc::clone(&app.events));
    let removed_total = app.metrics.chaos_disk_fill_ended_total.clone();
    let on_end = on_end(app, mb);
    let at = SystemTime::now();
    let mut done = None;
    start_fault(app, FaultKind::Disk, now, None, |ticket| {
        events.emit(Event::ChaosStarted, started);
        let (thread, rx) = disk.spawn(ticket, bytes, ramp, keep, on_end)?;
        done = Some(rx);
        Ok(Running {
            threads: vec![thread],
            cleanup: Box::new(move |ended| {
                // Ended by itself (ENOSPC, EDQUOT, an I/O error): the writer
                // has removed the partial file and said why already.
                if ended == Ended::Failed {
                    return;
                }
                if let Some(bytes) = disk.remove() {
                    removed_total.with_label_values(&[EndReason::Removed.label()]).inc();
                    events.emit(
                        Event::ChaosFinished,
                        json!({"action": "disk", "reason": EndReason::Removed.label(), "ended": ended.label(), "removed_bytes": bytes, "removed_mb": bytes >> 20}),
                    );
                }
            }),
            detail: size_detail(mb, ramp, None),
            ends_at: ramp.map(|r| at + r),
            extra: json!({"target_bytes": bytes}),
        })
    })?;
    match done {
        Some(done) => Ok((done, at)),
        None => Err(Reply::internal_error("the disk fill started without its writer")),
    }
}

/// The answer to a fill written at once: 200 with what was written, or
/// why it ended early (507 when the disk ran out).
fn written(app: &App, fill: &FillRequest, dir: &str, outcome: FillOutcome) -> Reply {
    match outcome {
        FillOutcome::Complete { bytes, took } => {
            let body = json!({
                "status": "filled",
                "action": "disk",
                "mb": fill.mb,
                "written_bytes": bytes,
                "written_mb": bytes >> 20,
                "seconds": took.as_secs_f64(),
                "dir": dir,
            });
            app.events.emit(Event::ChaosFinished, body.clone());
            Reply::ok(&body)
        }
        FillOutcome::Ended(ended) => {
            let (reason, written, kept) = (ended.reason, ended.written, ended.kept);
            let status = match reason {
                EndReason::NoSpace | EndReason::Quota | EndReason::FileSizeLimit => 507,
                EndReason::Removed => 409,
                EndReason::IoError => 500,
            };
            Reply::json(
                status,
                &json!({
                    "error": answered_message(app, reason, written, fill.mb, kept, &ended.error),
                    "reason": reason.label(),
                    "written_bytes": written,
                    "written_mb": written >> 20,
                    "asked_mb": fill.mb,
                    "kept": kept,
                    "dir": dir,
                }),
            )
        }
    }
}

/// `DELETE /load/disk`: stops the fill through the registry, and answers
/// once its writer thread has ended and its file is removed.
pub fn remove(app: &App) -> Reply {
    if app.registry.stop(Some(FaultKind::Disk), Ended::OnRequest).is_empty() {
        return Reply::ok(&json!({"status": "not active", "removed_bytes": 0, "removed_mb": 0}));
    }
    let bytes = app
        .disk
        .last_ended()
        .filter(|e| e.reason == EndReason::Removed)
        .map_or(0, |e| e.written);
    Reply::ok(&json!({"status": "removed", "removed_bytes": bytes, "removed_mb": bytes >> 20}))
}

/// [`ended_message`] for the answer: a fill stopped by the process's own
/// ordered stop says so, not that someone asked.
fn answered_message(app: &App, reason: EndReason, written: u64, mb: u64, kept: bool, error: &str) -> String {
    if reason == EndReason::Removed && app.shutting_down() {
        let why = "stopped by the process's shutdown (SIGTERM or SIGINT)";
        return format_ended(
            "the disk fill was stopped (the shutdown)",
            reason,
            written,
            mb,
            kept,
            why,
        );
    }
    ended_message(reason, written, mb, kept, error)
}

fn ended_message(reason: EndReason, written: u64, mb: u64, kept: bool, error: &str) -> String {
    let what = match reason {
        EndReason::NoSpace => "the disk is full (ENOSPC)",
        EndReason::Quota => "the disk quota is used up (EDQUOT)",
        EndReason::FileSizeLimit => "the process's file-size limit is reached (RLIMIT_FSIZE: EFBIG)",
        EndReason::IoError => "the disk fill failed",
        EndReason::Removed => "the disk fill was stopped (DELETE /load/disk or POST /chaos/stop)",
    };
    format_ended(what, reason, written, mb, kept, error)
}

/// `what` ended the fill after `written` bytes of `mb` MiB, and the file's fate.
fn format_ended(what: &str, reason: EndReason, written: u64, mb: u64, kept: bool, error: &str) -> String {
    let file = if reason == EndReason::Removed {
        "the file was removed"
    } else if kept {
        "the partial file was kept (keep=true)"
    } else {
        "the partial file was removed"
    };
    format!(
        "{what} after writing {} MiB ({written} bytes) of {mb} MiB: {error}; {file}",
        written >> 20
    )
}

/// What the writer does when a fill ends early, at that moment: log, count
/// (`chaos_actions_total{action="disk",outcome="failed"}` and
/// `chaos_disk_fill_ended_total{reason}`) and emit CHAOS_FINISHED.
fn on_end(app: &App, mb: u64) -> OnEnd {
    let ended = app.metrics.chaos_disk_fill_ended_total.clone();
    let actions = app.metrics.chaos_actions_total.clone();
    let events = Arc::clone(&app.events);
    Arc::new(move |outcome: &FillOutcome, path: &Path| {
        if let FillOutcome::Ended(e) = outcome {
            let (reason, written, kept) = (e.reason, e.written, e.kept);
            let message = ended_message(reason, written, mb, kept, &e.error);
            log::warn!("{message} ({})", path.display());
            ended.with_label_values(&[reason.label()]).inc();
            actions.with_label_values(&["disk", "failed"]).inc();
            events.emit(
                Event::ChaosFinished,
                json!({
                    "action": "disk",
                    "reason": reason.label(),
                    "error": message,
                    "written_bytes": written,
                    "written_mb": written >> 20,
                    "asked_mb": mb,
                    "kept": kept,
                }),
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing;

    #[test]
    fn fills_lists_and_removes() {
        let (app, events) = testing::app("disk", &[("CHAOS_COOLDOWN_SECONDS", "0")]);
        let r = fill(&app, "mb=2", Instant::now());
        assert_eq!(r.status, 200, "{:?}", r.body_json());
        assert_eq!(r.body_json()["written_bytes"], 2 << 20);
        assert_eq!(app.disk.written(), 2 << 20);
        let again = fill(&app, "mb=1", Instant::now());
        assert_eq!(again.status, 409);
        assert!(
            again.body_json()["error"]
                .as_str()
                .unwrap()
                .contains("DELETE /load/disk")
        );
        let r = remove(&app);
        assert_eq!(r.body_json()["removed_bytes"], 2 << 20);
        assert_eq!(remove(&app).body_json()["status"], "not active");
        assert_eq!(
            app.metrics
                .chaos_disk_fill_ended_total
                .with_label_values(&["removed"])
                .get(),
            1
        );
        assert_eq!(
            events.event_names(),
            ["CHAOS_STARTED", "CHAOS_FINISHED", "CHAOS_REJECTED", "CHAOS_FINISHED"]
        );
        assert_eq!((app.registry.active(), app.disk.status()), (0, None));
    }

    #[test]
    fn a_fill_stopped_by_the_shutdown_says_so_not_that_someone_asked() {
        let (app, _) = testing::app("disk-shutdown", &[]);
        let asked = answered_message(&app, EndReason::Removed, 1 << 20, 8, false, "stopped on request");
        assert!(asked.contains("(DELETE /load/disk or POST /chaos/stop)"), "{asked}");
        app.begin_shutdown("SIGTERM");
        let m = answered_message(&app, EndReason::Removed, 1 << 20, 8, false, "stopped on request");
        assert_eq!(
            m,
            "the disk fill was stopped (the shutdown) after writing 1 MiB (1048576 bytes) of 8 MiB: \
             stopped by the process's shutdown (SIGTERM or SIGINT); the file was removed"
        );
    }

    #[test]
    fn the_507_message_names_the_cause_the_size_written_and_the_file() {
        let m = ended_message(
            EndReason::Quota,
            5 << 20,
            64,
            false,
            "Disk quota exceeded (os error 122)",
        );
        assert_eq!(
            m,
            "the disk quota is used up (EDQUOT) after writing 5 MiB (5242880 bytes) of 64 MiB: \
             Disk quota exceeded (os error 122); the partial file was removed"
        );
        assert!(ended_message(EndReason::NoSpace, 0, 1, true, "x").ends_with("kept (keep=true)"));
    }

    #[test]
    fn bad_disk_parameters_are_400() {
        let (app, _) = testing::app("disk-400", &[]);
        for q in [
            "mb=0",
            "mb=-1",
            "mb=1048577",
            "mb=abc",
            "ramp=0",
            "ramp=3601",
            "keep=yes",
            "size=1",
            "mb=1&mb=2",
        ] {
            let r = fill(&app, q, Instant::now());
            assert_eq!(r.status, 400, "{q}: {:?}", r.body_json());
        }
        assert_eq!(app.disk.status(), None);
    }

    #[test]
    fn an_unusable_dir_is_503_naming_it() {
        let (app, _) = testing::app("disk-503", &[("DISK_FILL_DIR", "/proc/chaos-backend-no-such/fill")]);
        let r = fill(&app, "mb=1", Instant::now());
        assert_eq!(r.status, 503);
        assert!(
            r.body_json()["error"]
                .as_str()
                .unwrap()
                .contains("/proc/chaos-backend-no-such/fill")
        );
    }
}
