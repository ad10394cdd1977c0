//! The connection layer's metrics, read from the patched tiny_http's
//! counters at scrape time: `http_connections_open` and
//! `http_connections_rejected_total{reason}`, plus
//! `http_connections_closed_total{reason}` for connections the server closed
//! itself, and `http_answers_waiting_bytes`, the rendered answers not yet
//! written (held against their budget). Every label set exists from
//! start-up.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus::{IntCounterVec, IntGauge};

use crate::observe::registering::Registering;

/// `reason` of `http_connections_rejected_total`: closed at once because the
/// cap was reached and no connection could be evicted (`cap`), or because no
/// thread could be started for it (`thread`); `accept_error`: an `accept`
/// failed (EMFILE, ENFILE, ENOBUFS ...), the connection waits in the backlog.
pub const REJECTED: &[&str] = &["cap", "thread", "accept_error"];
/// `reason` of `http_connections_closed_total`.
pub const CLOSED: &[&str] = &[
    "evicted",
    "idle_timeout",
    "head_timeout",
    "write_timeout",
    "drain_timeout",
    "memory_budget",
];

/// See the module doc.
pub struct ConnectionMetrics {
    pub open: IntGauge,
    pub rejected: IntCounterVec,
    pub closed: IntCounterVec,
    pub answers_waiting: IntGauge,
    server: OnceLock<Arc<tiny_http::Server>>,
    /// Counters are brought up to the server's totals by adding the
    /// difference: one scrape at a time.
    sync: Mutex<()>,
}

impl ConnectionMetrics {
    pub fn new(r: &Registering<'_>) -> Result<ConnectionMetrics, prometheus::Error> {
        let open = r.int_gauge("http_connections_open", "HTTP connections open now.")?;
        let rejected = r.int_counter_vec(
            "http_connections_rejected_total",
            "HTTP connections refused: cap (at the cap, none evictable), thread (no thread), accept_error.",
            &["reason"],
        )?;
        let closed = r.int_counter_vec(
            "http_connections_closed_total",
            "HTTP connections the server closed: evicted at the cap, past a timeout, or past the budget of answers waiting.",
            &["reason"],
        )?;
        let answers_waiting = r.int_gauge(
            "http_answers_waiting_bytes",
            "Bytes of rendered HTTP answers not yet written (shared bodies not counted).",
        )?;
        for r in REJECTED {
            rejected.with_label_values(&[r]);
        }
        for r in CLOSED {
            closed.with_label_values(&[r]);
        }
        Ok(ConnectionMetrics {
            open,
            rejected,
            closed,
            answers_waiting,
            server: OnceLock::new(),
            sync: Mutex::new(()),
        })
    }

    /// The server whose counters the metrics show.
    pub fn watch(&self, server: Arc<tiny_http::Server>) {
        let _ = self.server.set(server);
    }

    /// Brings the metrics up to the server's counters (before a scrape).
    pub fn refresh(&self) {
        let Some(server) = self.server.get() else { return };
        let s = server.connection_stats();
        let _one_at_a_time = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        self.open.set(i64::try_from(s.open).unwrap_or(i64::MAX));
        self.answers_waiting
            .set(i64::try_from(s.answers_waiting).unwrap_or(i64::MAX));
        let catch_up = |vec: &IntCounterVec, reason: &str, total: u64| {
            let c = vec.with_label_values(&[reason]);
            c.inc_by(total.saturating_sub(c.get()));
        };
        catch_up(&self.rejected, "cap", s.rejected_cap);
        catch_up(&self.rejected, "thread", s.rejected_spawn);
        catch_up(&self.rejected, "accept_error", s.accept_errors);
        catch_up(&self.closed, "evicted", s.evicted);
        catch_up(&self.closed, "idle_timeout", s.idle_timeouts);
        catch_up(&self.closed, "head_timeout", s.head_timeouts);
        catch_up(&self.closed, "write_timeout", s.write_timeouts);
        catch_up(&self.closed, "drain_timeout", s.drain_timeouts);
        catch_up(&self.closed, "memory_budget", s.shed);
    }
}
