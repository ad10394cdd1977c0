//! Counting what users saw: outcomes by class, latency percentiles, and the
//! pods that served. Pure bookkeeping over the times it is given; the event
//! loop feeds it.

use std::collections::HashMap;

use serde_json::{Value, json};

/// Why a request failed, as a user would tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The connection was refused, or its address was unreachable.
    Refused,
    /// The connection was reset or closed before a complete answer head.
    Reset,
    /// No whole answer within `--timeout` of the due time.
    Timeout,
    /// A 5xx status.
    Http5xx,
    /// Another status that is not 2xx.
    HttpOther,
    /// A 2xx cut short or not a JSON object, or bytes that are not HTTP.
    BadBody,
    /// The observer itself could not open a socket (out of descriptors or
    /// local ports): a figure about the observer, not the target.
    Local,
}

pub const CLASSES: [Class; 7] = [
    Class::Refused,
    Class::Reset,
    Class::Timeout,
    Class::Http5xx,
    Class::HttpOther,
    Class::BadBody,
    Class::Local,
];

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Refused => "refused",
            Class::Reset => "reset",
            Class::Timeout => "timeout",
            Class::Http5xx => "http_5xx",
            Class::HttpOther => "http_other",
            Class::BadBody => "bad_body",
            Class::Local => "local",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestEnd {
    /// A 2xx with a JSON object, served by this pod.
    Ok(String),
    Failed(Class),
}

/// A JSON object written with its keys in the order given (serde_json's own
/// map sorts them): the lines are read by people, `t` first.
pub struct Object(String);

impl Default for Object {
    fn default() -> Self {
        Object("{".to_string())
    }
}

impl Object {
    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push_str(&Value::from(key).to_string());
        self.0.push(':');
    }

    pub fn put(mut self, key: &str, value: Value) -> Object {
        self.key(key);
        self.0.push_str(&value.to_string());
        self
    }

    pub fn put_object(mut self, key: &str, value: Object) -> Object {
        self.key(key);
        self.0.push_str(&value.finish());
        self
    }

    /// A JSON array of objects.
    pub fn put_objects(mut self, key: &str, values: impl IntoIterator<Item = Object>) -> Object {
        self.key(key);
        let items: Vec<String> = values.into_iter().map(Object::finish).collect();
        self.0.push('[');
        self.0.push_str(&items.join(","));
        self.0.push(']');
        self
    }

    pub fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Counts by class, as the JSON object `{"refused": n, ...}`.
pub fn errors_json(counts: &[u64; 7]) -> Object {
    CLASSES
        .iter()
        .fold(Object::default(), |o, c| o.put(c.name(), json!(counts[c.index()])))
}

/// Milliseconds from microseconds, rounded to the microsecond.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Rounds to three decimals, for output.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Pod names, interned. Past `MAX_PODS` names every new one counts as
/// `(other pods)`: a target that names a new pod per answer cannot grow
/// the observer without bound.
#[derive(Default)]
pub struct Pods {
    names: Vec<String>,
    ids: HashMap<String, usize>,
}

pub const MAX_PODS: usize = 256;
const OTHER_PODS: &str = "(other pods)";

impl Pods {
    pub fn id(&mut self, name: &str) -> usize {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let name = if self.names.len() + 1 >= MAX_PODS {
            OTHER_PODS
        } else {
            name
        };
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), self.names.len() - 1);
        self.names.len() - 1
    }

    pub fn name(&self, id: usize) -> &str {
        &self.names[id]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// A latency histogram in microseconds with fixed memory (35 KiB): exact
/// below 256 µs, then 128 buckets per power of two, so a percentile is
/// reported within 0.8% above its true value (never below it). The maximum
/// is exact.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const EXACT: u64 = 2 * SUB;
/// Values are clamped below 2^40 µs (12 days).
const TOP_BIT: u32 = 40;
const BUCKETS: usize = EXACT as usize + (TOP_BIT - SUB_BITS - 1) as usize * SUB as usize;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        let v = v.min((1 << TOP_BIT) - 1);
        if v < EXACT {
            return v as usize;
        }
        let top = 63 - v.leading_zeros();
        let sub = (v >> (top - SUB_BITS)) & (SUB - 1);
        (EXACT + (top - SUB_BITS - 1) as u64 * SUB + sub) as usize
    }

    /// The largest value that falls in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < EXACT {
            return i;
        }
        let top = (i - EXACT) / SUB + SUB_BITS as u64 + 1;
        let sub = (i - EXACT) % SUB;
        ((SUB + sub + 1) << (top - SUB_BITS as u64)) - 1
    }

    pub fn record(&mut self, us: u64) {
        self.counts[Self::index(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    /// The nearest-rank percentile `p` in microseconds, `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::upper(i).min(self.max));
            }
        }
        Some(self.max)
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }
}

/// The nearest-rank percentile of sorted samples.
fn nearest_rank(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn ms_or_null(us: Option<u64>) -> Value {
    us.map_or(Value::Null, |u| json!(ms(u)))
}

/// One second of the run: requests sent in it, and the outcomes that became
/// known in it (a request sent before a stall is counted when it ends).
#[derive(Default)]
pub struct Second {
    sent: u64,
    ok: u64,
    errors: [u64; 7],
    /// Latencies of the requests that ended, in µs (exact percentiles).
    latencies: Vec<u64>,
    /// Answers per pod id.
    pods: Vec<u64>,
    late_max: u64,
}

impl Second {
    pub fn sent(&mut self, late_us: u64) {
        self.sent += 1;
        self.late_max = self.late_max.max(late_us);
    }

    pub fn ended(&mut self, pod: Option<usize>, class: Option<Class>, latency_us: u64) {
        self.latencies.push(latency_us);
        match (pod, class) {
            (_, Some(c)) => self.errors[c.index()] += 1,
            (Some(id), None) => {
                if self.pods.len() <= id {
                    self.pods.resize(id + 1, 0);
                }
                self.pods[id] += 1;
                self.ok += 1;
            }
            (None, None) => self.ok += 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sent == 0 && self.latencies.is_empty()
    }

    /// The JSON line for this second, `t` seconds after the start, and a
    /// fresh second. Every pod seen so far is listed, with 0 when it served
    /// nothing in this second.
    pub fn line(&mut self, t: f64, pods: &Pods, in_flight: usize) -> String {
        let mut lat = std::mem::take(&mut self.latencies);
        lat.sort_unstable();
        let served = (0..pods.len()).fold(Object::default(), |o, id| {
            o.put(pods.name(id), json!(self.pods.get(id).copied().unwrap_or(0)))
        });
        let line = Object::default()
            .put("t", json!(round3(t)))
            .put("sent", json!(self.sent))
            .put("ok", json!(self.ok))
            .put_object("errors", errors_json(&self.errors))
            .put("p50_ms", ms_or_null(nearest_rank(&lat, 50.0)))
            .put("p99_ms", ms_or_null(nearest_rank(&lat, 99.0)))
            .put("max_ms", ms_or_null(lat.last().copied()))
            .put_object("pods", served)
            .put("in_flight", json!(in_flight))
            .put("late_max_ms", json!(ms(self.late_max)))
            .finish();
        lat.clear();
        *self = Second {
            latencies: lat,
            ..Second::default()
        };
        line
    }
}

/// The whole run.
#[derive(Default)]
pub struct Totals {
    pub sent: u64,
    pub ok: u64,
    pub errors: [u64; 7],
    pub latency: Histogram,
    pub lateness: Histogram,
    pub served: Vec<u64>,
}

impl Totals {
    pub fn sent(&mut self, late_us: u64) {
        self.sent += 1;
        self.lateness.record(late_us);
    }

    pub fn ended(&mut self, pod: Option<usize>, class: Option<Class>, latency_us: u64) {
        self.latency.record(latency_us);
        match class {
            Some(c) => self.errors[c.index()] += 1,
            None => {
                self.ok += 1;
                if let Some(id) = pod {
                    if self.served.len() <= id {
                        self.served.resize(id + 1, 0);
                    }
                    self.served[id] += 1;
                }
            }
        }
    }

    pub fn finished(&self) -> u64 {
        self.ok + self.errors.iter().sum::<u64>()
    }

    /// Percent of the finished requests that were ok; `None` before any ended.
    pub fn availability(&self) -> Option<f64> {
        let finished = self.finished();
        (finished > 0).then(|| self.ok as f64 * 100.0 / finished as f64)
    }

    /// The summary's latency fields.
    pub fn latency_fields(&self, o: Object) -> Object {
        o.put("p50_ms", ms_or_null(self.latency.percentile(50.0)))
            .put("p99_ms", ms_or_null(self.latency.percentile(99.0)))
            .put("max_ms", ms_or_null(self.latency.max()))
            .put("lateness_p50_ms", ms_or_null(self.lateness.percentile(50.0)))
            .put("lateness_p99_ms", ms_or_null(self.lateness.percentile(99.0)))
            .put("lateness_max_ms", ms_or_null(self.lateness.max()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_cover_every_value_once_and_in_order() {
        let mut last = 0;
        for i in 1..BUCKETS {
            let upper = Histogram::upper(i);
            assert!(upper > last, "bucket {i}");
            assert_eq!(Histogram::index(upper), i, "upper of {i}");
            assert_eq!(Histogram::index(last + 1), i, "lower of {i}");
            last = upper;
        }
        assert_eq!(last, (1 << TOP_BIT) - 1);
    }

    #[test]
    fn histogram_percentiles_are_within_one_bucket_above_the_truth() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile(50.0), None);
        // 1..=10000 µs: the true p50 is 5000, p99 9900.
        for v in 1..=10_000 {
            h.record(v);
        }
        let p50 = h.percentile(50.0).unwrap();
        let p99 = h.percentile(99.0).unwrap();
        assert!((5000..=5000 * 129 / 128).contains(&p50), "{p50}");
        assert!((9900..=9900 * 129 / 128).contains(&p99), "{p99}");
        assert_eq!(h.percentile(100.0), Some(10_000));
        assert_eq!(h.max(), Some(10_000));
        // Exact below 256 µs, and never above the maximum.
        let mut small = Histogram::default();
        small.record(3);
        small.record(200);
        assert_eq!((small.percentile(50.0), small.percentile(99.0)), (Some(3), Some(200)));
        let mut one = Histogram::default();
        one.record(1_000_001);
        assert_eq!(one.percentile(99.0), Some(1_000_001));
    }

    #[test]
    fn a_second_lists_every_pod_seen_and_resets() {
        let mut pods = Pods::default();
        let (a, b) = (pods.id("a"), pods.id("b"));
        let mut s = Second::default();
        s.sent(100);
        s.sent(2500);
        s.ended(Some(a), None, 1000);
        s.ended(None, Some(Class::Reset), 3000);
        let text = s.line(1.0, &pods, 1);
        assert!(
            text.starts_with("{\"t\":1.0,\"sent\":2,\"ok\":1,\"errors\":{\"refused\":0,"),
            "{text}"
        );
        let line: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["sent"], 2);
        assert_eq!(line["ok"], 1);
        assert_eq!(line["errors"]["reset"], 1);
        assert_eq!(line["errors"]["refused"], 0);
        assert_eq!(line["p50_ms"], 1.0);
        assert_eq!(
            (line["p99_ms"].clone(), line["max_ms"].clone()),
            (json!(3.0), json!(3.0))
        );
        assert_eq!(line["pods"], json!({"a": 1, "b": 0}));
        assert_eq!(line["late_max_ms"], 2.5);
        assert_eq!(line["in_flight"], 1);
        let _ = b;
        assert!(s.is_empty());
        let empty: Value = serde_json::from_str(&s.line(2.0, &pods, 0)).unwrap();
        assert_eq!(
            (empty["sent"].clone(), empty["p99_ms"].clone()),
            (json!(0), Value::Null)
        );
    }

    #[test]
    fn totals_give_availability_over_finished_requests() {
        let mut t = Totals::default();
        assert_eq!(t.availability(), None);
        for _ in 0..3 {
            t.sent(0);
        }
        t.ended(Some(0), None, 10);
        t.ended(None, Some(Class::Timeout), 10);
        assert_eq!(t.availability(), Some(50.0));
        assert_eq!(t.finished(), 2);
        assert_eq!(t.served, [1]);
    }

    #[test]
    fn pod_names_are_bounded() {
        let mut pods = Pods::default();
        for i in 0..1000 {
            pods.id(&format!("pod-{i}"));
        }
        assert_eq!(pods.len(), MAX_PODS);
        assert_eq!(pods.name(MAX_PODS - 1), "(other pods)");
        assert_eq!(pods.id("pod-3"), 3);
    }
}
