//! `Registering`: the one way this crate makes a Prometheus metric, so that
//! none can be made without being registered.

use prometheus::core::Collector;
use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Makes metrics already registered in one registry: the only way this
/// crate makes a metric, so none can exist without being registered.
pub struct Registering<'a>(&'a Registry);

impl Registering<'_> {
    pub fn new(registry: &Registry) -> Registering<'_> {
        Registering(registry)
    }

    fn add<M: Collector + Clone + 'static>(
        &self,
        metric: Result<M, prometheus::Error>,
    ) -> Result<M, prometheus::Error> {
        let metric = metric?;
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    /// A collector of families of its own (the kept healing figures).
    pub fn collector<C: Collector + 'static>(&self, collector: C) -> Result<(), prometheus::Error> {
        self.0.register(Box::new(collector))
    }

    pub fn int_gauge(&self, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
        self.add(IntGauge::new(name, help))
    }

    pub fn gauge(&self, name: &str, help: &str) -> Result<Gauge, prometheus::Error> {
        self.add(Gauge::new(name, help))
    }

    pub fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, prometheus::Error> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    pub fn int_counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, prometheus::Error> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> Result<HistogramVec, prometheus::Error> {
        self.add(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        ))
    }
}
