//! The `process_*` families that the prometheus crate's process collector
//! gave (the same names, help, types and values), read from `/proc/self`
//! without procfs, procfs-core and rustix: about 30 KB of the image for
//! seven numbers.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, IntCounter, IntGauge};

use crate::os::sys;

pub struct ProcessCollector {
    descs: Vec<Desc>,
    cpu_total: IntCounter,
    open_fds: IntGauge,
    max_fds: IntGauge,
    vsize: IntGauge,
    rss: IntGauge,
    /// Fractional, to the clock tick (the prometheus crate's collector gave
    /// whole seconds, as Go's gives fractions): two lives that start within
    /// one second (a crash loop's healthy start 0.4 s after the crash) must
    /// still tell apart, since that is how the generator sees a restart.
    start_time: Gauge,
    threads: IntGauge,
}

/// The fields of `/proc/self/stat` read here (in clock ticks and pages).
#[derive(Debug, PartialEq)]
struct Stat {
    ticks: u64,
    threads: i64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// `/proc/self/stat`'s fields, counted after the command's closing `)`
/// (the command may hold spaces and parentheses): field 3 is the first.
fn parse_stat(text: &str) -> Option<Stat> {
    let fields: Vec<&str> = text.get(text.rfind(')')? + 1..)?.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        ticks: field(14)? + field(15)?,
        threads: field(20)? as i64,
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

fn read_stat() -> Option<Stat> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// The boot time (`btime` of `/proc/stat`), in seconds since the epoch.
fn boot_time(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

impl ProcessCollector {
    pub fn for_self() -> ProcessCollector {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("a valid metric name");
        let c = ProcessCollector {
            descs: Vec::new(),
            cpu_total: IntCounter::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            )
            .expect("a valid metric name"),
            open_fds: gauge("process_open_fds", "Number of open file descriptors."),
            max_fds: gauge("process_max_fds", "Maximum number of open file descriptors."),
            vsize: gauge("process_virtual_memory_bytes", "Virtual memory size in bytes."),
            rss: gauge("process_resident_memory_bytes", "Resident memory size in bytes."),
            start_time: Gauge::new(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            )
            .expect("a valid metric name"),
            threads: gauge("process_threads", "Number of OS threads in the process."),
        };
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| boot_time(&t));
        if let (Some(boot), Some(stat)) = (boot, read_stat()) {
            c.start_time
                .set(stat.start_ticks as f64 / sys::clock_ticks_per_second() as f64 + boot as f64);
        }
        let descs = [
            &c.cpu_total as &dyn Collector,
            &c.open_fds,
            &c.max_fds,
            &c.vsize,
            &c.rss,
            &c.start_time,
            &c.threads,
        ]
        .iter()
        .flat_map(|m| m.desc().into_iter().cloned())
        .collect();
        ProcessCollector { descs, ..c }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    /// Read at each scrape, as the crate's collector did: the fd count
    /// includes the one that reads `/proc/self/fd`; an unlimited fd limit
    /// leaves `process_max_fds` at 0; CPU time in whole seconds.
    fn collect(&self) -> Vec<MetricFamily> {
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
        if let Some(max) = sys::nofile_limit() {
            self.max_fds.set(max as i64);
        }
        let mut families = Vec::with_capacity(7);
        if let Some(stat) = read_stat() {
            self.vsize.set(stat.vsize as i64);
            self.rss.set((stat.rss_pages * sys::page_size() as u64) as i64);
            let total = stat.ticks / sys::clock_ticks_per_second();
            self.cpu_total.inc_by(total.saturating_sub(self.cpu_total.get()));
            self.threads.set(stat.threads);
            families.extend(self.cpu_total.collect());
        }
        for gauge in [&self.open_fds, &self.max_fds, &self.vsize, &self.rss] {
            families.extend(gauge.collect());
        }
        families.extend(self.start_time.collect());
        families.extend(self.threads.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Registry;
    use prometheus::proto::MetricType;

    /// Each family's (name, help, type, value) from `c`.
    fn families(c: &dyn Collector) -> Vec<(String, String, MetricType, f64)> {
        c.collect()
            .iter()
            .map(|f| {
                let m = &f.get_metric()[0];
                let value = match f.get_field_type() {
                    MetricType::COUNTER => m.get_counter().get_value(),
                    _ => m.get_gauge().get_value(),
                };
                (f.name().to_string(), f.help().to_string(), f.get_field_type(), value)
            })
            .collect()
    }

    #[test]
    fn stat_fields_are_counted_after_the_command() {
        let text = "42 (a) (b c)) S 1 42 42 0 -1 4194560 900 0 0 0 250 130 0 0 20 0 7 0 123456 9000000 512 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                ticks: 380,
                threads: 7,
                start_ticks: 123456,
                vsize: 9_000_000,
                rss_pages: 512
            })
        );
        assert_eq!(parse_stat("42 (cut) S 1"), None);
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1765000000\nprocesses 9\n"),
            Some(1_765_000_000)
        );
    }

    #[test]
    fn each_family_agrees_with_proc_and_with_the_crates_collector() {
        let ours = ProcessCollector::for_self();
        let theirs = prometheus::process_collector::ProcessCollector::for_self();
        // Registered as the service registers it (one registry, no clash).
        Registry::new()
            .register(Box::new(ProcessCollector::for_self()))
            .unwrap();
        let (a, b) = (families(&ours), families(&theirs));
        let names: Vec<&str> = a.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "process_cpu_seconds_total",
                "process_open_fds",
                "process_max_fds",
                "process_virtual_memory_bytes",
                "process_resident_memory_bytes",
                "process_start_time_seconds",
                "process_threads"
            ]
        );
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect::<Vec<_>>();
        let proc_field = |n: usize| after[n - 3].parse::<f64>().unwrap();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse::<f64>().ok())
            .unwrap();
        let fds = std::fs::read_dir("/proc/self/fd").unwrap().count() as f64;
        let btime = boot_time(&std::fs::read_to_string("/proc/stat").unwrap()).unwrap() as f64;
        for ((name, help, kind, value), (name_b, help_b, kind_b, value_b)) in a.iter().zip(&b) {
            assert_eq!(
                (name, help, kind),
                (name_b, help_b, kind_b),
                "as the crate named and typed it"
            );
            // Values that move between two reads (fds, memory, threads: other
            // tests run threads meanwhile) within a bound; the rest exactly.
            let (from_proc, slack) = match name.as_str() {
                "process_cpu_seconds_total" => ((proc_field(14) + proc_field(15)) / 100.0, 1.0),
                "process_open_fds" => (fds, 16.0),
                "process_max_fds" => (max_fds, 0.0),
                "process_virtual_memory_bytes" => (proc_field(23), 256.0 * 1024.0 * 1024.0),
                "process_resident_memory_bytes" => (proc_field(24) * sys::page_size() as f64, 64.0 * 1024.0 * 1024.0),
                "process_start_time_seconds" => (proc_field(22) / 100.0 + btime, 1.0),
                _ => (proc_field(20), 32.0),
            };
            assert!(
                (value - from_proc).abs() <= slack,
                "{name}: {value} vs /proc {from_proc}"
            );
            assert!(
                (value - value_b).abs() <= slack,
                "{name}: {value} vs the crate's {value_b}"
            );
            assert!(*value > 0.0 || name == "process_cpu_seconds_total", "{name}: {value}");
        }
    }
}
