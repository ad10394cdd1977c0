//! Patch (chaos-backend): the watchdog: one thread per server that writes
//! deferred answers (`timer.rs`), closes the connections that outlive
//! their limits (`Table::enforce`), and those whose answers have waited
//! longest once answers waiting pass the budget (`Table::shed`).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::table::Table;

/// Starts the server's watchdog thread; it ends once `closed` is set.
pub(crate) fn spawn_watchdog(table: Arc<Table>, closed: Arc<AtomicBool>) -> io::Result<()> {
    let l = &table.limits;
    let shortest = [
        l.idle_timeout,
        l.head_timeout,
        l.write_timeout,
        l.drain_timeout,
    ]
    .iter()
    .flatten()
    .min()
    .copied();
    // A limit is enforced at most a quarter of itself late (and at most
    // 250 ms): a scan of a few thousand entries.
    let period = shortest.map_or(Duration::from_millis(250), |d| {
        (d / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
    });
    let enforce = shortest.is_some();
    thread::Builder::new()
        .name("http-watchdog".into())
        .spawn(move || {
            let timer = Arc::clone(&table.timer);
            let mut next_scan = Instant::now() + period;
            while !closed.load(Ordering::Relaxed) {
                let due = timer.take_due(next_scan);
                let now = Instant::now();
                if timer.take_shed() {
                    table.shed();
                }
                for conn in due {
                    if let Some(again) = conn.flush_deferred(now) {
                        timer.add(again, conn);
                    }
                }
                if now >= next_scan {
                    if enforce {
                        table.enforce(now);
                    }
                    next_scan = now + period;
                }
            }
        })
        .map(|_| ())
}
