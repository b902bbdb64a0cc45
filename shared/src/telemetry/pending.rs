//! What the counters gained since the functions last wrote their CloudWatch records: a
//! Lambda container reports per invocation, so it needs increases, not running totals.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The most call durations kept per series between two drains (CloudWatch's embedded
/// format takes 100 values a metric).
const MAX_DURATIONS: usize = 100;

/// A series: its metric's name and its dimensions.
pub type SeriesKey = (&'static str, Vec<(&'static str, String)>);

/// One series' increase since the last drain.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name (`Events`, `Deliveries`, `TargetRequests`, `TargetRequestDuration`).
    pub metric: &'static str,
    /// The dimensions, names first.
    pub dimensions: Vec<(&'static str, String)>,
    /// What it gained.
    pub value: SampleValue,
}

/// A counter's increase, or the durations of calls.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleValue {
    /// How much a counter grew.
    Count(u64),
    /// Durations, in milliseconds.
    Milliseconds(Vec<f64>),
}

/// The increases since the last drain.
#[derive(Debug, Default)]
pub struct Pending {
    series: Mutex<BTreeMap<SeriesKey, SampleValue>>,
}

impl Pending {
    /// Adds one to a counter series.
    pub fn count(&self, metric: &'static str, dimensions: Vec<(&'static str, String)>) {
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry((metric, dimensions))
            .or_insert(SampleValue::Count(0));
        if let SampleValue::Count(n) = entry {
            *n += 1;
        }
    }

    /// Adds a duration to a series.
    pub fn duration(&self, metric: &'static str, dimensions: Vec<(&'static str, String)>, ms: f64) {
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry((metric, dimensions))
            .or_insert(SampleValue::Milliseconds(Vec::new()));
        if let SampleValue::Milliseconds(v) = entry {
            if v.len() < MAX_DURATIONS {
                v.push(ms);
            }
        }
    }

    /// Takes every increase, leaving none.
    pub fn drain(&self) -> Vec<Sample> {
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *map)
            .into_iter()
            .map(|((metric, dimensions), value)| Sample {
                metric,
                dimensions,
                value,
            })
            .collect()
    }
}
