//! Readiness: which checks fail now, each with the reason /ready gives.
//! The 200/503 transitions they cause are timed in `healing`.

use std::time::Duration;

use crate::observe::latency::Summary;

/// What the checks look at, read at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    pub starting: bool,
    /// A slow start holds /health and /ready (`SLOW_START_SECONDS`,
    /// `POST /fault/slowstart`).
    pub slow_start: bool,
    pub forced: bool,
    pub cpu_stress_active: bool,
    pub rss_bytes: u64,
    pub latency: Summary,
    pub shutting_down: bool,
}

/// The thresholds, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub fail_on_cpu_stress: bool,
    pub max_rss_bytes: u64,
    pub max_latency: Duration,
}

/// One failing check.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Starting,
    SlowStart,
    Forced,
    CpuStress,
    Memory { rss_bytes: u64, max_bytes: u64 },
    Latency { p95: Duration, max: Duration },
    ShuttingDown,
}

impl Reason {
    /// The text shown in `reasons` of the 503 body and in events.
    pub fn text(&self) -> String {
        match self {
            Reason::Starting => "starting (STARTUP_DELAY_SECONDS)".to_string(),
            Reason::SlowStart => "slow start (SLOW_START_SECONDS or POST /fault/slowstart)".to_string(),
            Reason::Forced => "forced by /fault/readiness".to_string(),
            Reason::CpuStress => "cpu stress active".to_string(),
            Reason::Memory { rss_bytes, max_bytes } => format!(
                "rss {:.1} MiB above MAX_MEMORY_MB_READY {} MiB",
                *rss_bytes as f64 / 1048576.0,
                max_bytes >> 20
            ),
            // The last bucket has no upper edge worth showing: a stalled
            // request (no answer at all) is there, and "282158.0 ms" was a
            // time no request took.
            Reason::Latency { p95, max } if *p95 > crate::observe::latency::slowest_floor() => format!(
                "p95 latency over {:.1} ms, above MAX_LATENCY_MS {} ms (an errors fault's stalled requests, which get no answer, count as slower than any)",
                crate::observe::latency::slowest_floor().as_secs_f64() * 1000.0,
                max.as_millis()
            ),
            Reason::Latency { p95, max } => format!(
                "p95 latency {:.1} ms above MAX_LATENCY_MS {} ms",
                p95.as_secs_f64() * 1000.0,
                max.as_millis()
            ),
            Reason::ShuttingDown => "shutting down".to_string(),
        }
    }

    /// Whether a chaos action can be the cause (shutting down never is).
    pub fn may_come_from_chaos(&self) -> bool {
        !matches!(self, Reason::ShuttingDown | Reason::Starting | Reason::SlowStart)
    }
}

/// Every failing check, in a fixed order; empty means ready.
pub fn evaluate(inputs: &Inputs, limits: &Limits) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if inputs.starting {
        reasons.push(Reason::Starting);
    }
    if inputs.slow_start {
        reasons.push(Reason::SlowStart);
    }
    if inputs.forced {
        reasons.push(Reason::Forced);
    }
    if limits.fail_on_cpu_stress && inputs.cpu_stress_active {
        reasons.push(Reason::CpuStress);
    }
    if inputs.rss_bytes > limits.max_rss_bytes {
        reasons.push(Reason::Memory {
            rss_bytes: inputs.rss_bytes,
            max_bytes: limits.max_rss_bytes,
        });
    }
    if inputs.latency.p95_above_threshold {
        reasons.push(Reason::Latency {
            p95: inputs.latency.p95.unwrap_or(limits.max_latency),
            max: limits.max_latency,
        });
    }
    if inputs.shutting_down {
        reasons.push(Reason::ShuttingDown);
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        fail_on_cpu_stress: true,
        max_rss_bytes: 400 << 20,
        max_latency: Duration::from_millis(500),
    };

    fn inputs() -> Inputs {
        Inputs {
            starting: false,
            slow_start: false,
            forced: false,
            cpu_stress_active: false,
            rss_bytes: 10 << 20,
            latency: Summary {
                samples: 0,
                p95: None,
                p95_above_threshold: false,
            },
            shutting_down: false,
        }
    }

    #[test]
    fn lists_every_failing_check() {
        assert!(evaluate(&inputs(), &LIMITS).is_empty());
        let all = Inputs {
            starting: false,
            slow_start: false,
            forced: false,
            cpu_stress_active: true,
            rss_bytes: 500 << 20,
            latency: Summary {
                samples: 10,
                p95: Some(Duration::from_millis(800)),
                p95_above_threshold: true,
            },
            shutting_down: true,
        };
        let texts: Vec<String> = evaluate(&all, &LIMITS).iter().map(Reason::text).collect();
        assert_eq!(
            texts,
            [
                "cpu stress active",
                "rss 500.0 MiB above MAX_MEMORY_MB_READY 400 MiB",
                "p95 latency 800.0 ms above MAX_LATENCY_MS 500 ms",
                "shutting down"
            ]
        );
    }

    #[test]
    fn a_p95_in_the_last_bucket_is_shown_as_a_floor_not_a_time() {
        // Stalls are recorded as slower than any threshold; the p95 then
        // sits in the last bucket, whose edge (282 s) no request took.
        let stalled = Reason::Latency {
            p95: Duration::from_secs(282),
            max: Duration::from_millis(500),
        };
        assert_eq!(
            stalled.text(),
            "p95 latency over 237265.7 ms, above MAX_LATENCY_MS 500 ms (an errors fault's stalled requests, which get no answer, count as slower than any)"
        );
    }

    #[test]
    fn cpu_stress_can_be_ignored() {
        let limits = Limits {
            fail_on_cpu_stress: false,
            ..LIMITS
        };
        let i = Inputs {
            cpu_stress_active: true,
            ..inputs()
        };
        assert!(evaluate(&i, &limits).is_empty());
    }
}
