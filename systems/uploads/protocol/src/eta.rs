//! Time left, from smoothed throughput per stage, with a confidence band.
//!
//! Each stage (upload, parse, embed) moves at its own pace, so each keeps
//! its own exponentially weighted mean and variance of the rate (percent per
//! second) between reports; a straight line from the stage's start would
//! keep an early stall in the estimate forever. The band is the rate's mean
//! plus or minus 1.96 standard deviations, turned into seconds; confidence
//! grows with the number of samples and shrinks with the rate's spread.
//!
//! The state is stored with the document (`documents.eta_state`) and passed
//! back in: times come in as arguments, nothing here reads a clock. The
//! functions observe in SQL (`private.upload_eta_observe`, migration
//! 20261201001300), under the document's row lock and on the database's
//! clock; that function states [`EtaState::observe`]'s rule again, constants
//! included: change both together. The browser client observes here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Weight of the newest rate sample.
const ALPHA: f64 = 0.3;
/// The band's width, in standard deviations (95% for a normal rate).
const Z: f64 = 1.96;
/// Reports closer together than this are merged into the next sample: a
/// rate over a few milliseconds is noise.
const MIN_SAMPLE_MS: i64 = 50;
/// The slow end of the band never assumes less than this share of the mean rate.
const SLOWEST_SHARE: f64 = 0.05;

/// One stage's smoothed rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StageRate {
    /// Mean rate, percent per second.
    pub rate: f64,
    /// Variance of the rate.
    pub var: f64,
    /// Progress at the last sample.
    pub progress: f64,
    /// Time of the last sample, unix ms.
    pub at_ms: i64,
    /// Rate samples taken.
    pub samples: u32,
}

/// Every stage's rate (`documents.eta_state`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EtaState {
    /// By stage name.
    #[serde(default)]
    pub stages: BTreeMap<String, StageRate>,
}

/// An estimate of the time left in a stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Eta {
    /// Most likely seconds left.
    pub seconds: f64,
    /// Seconds left at the fast end of the band.
    pub low_seconds: f64,
    /// Seconds left at the slow end of the band.
    pub high_seconds: f64,
    /// 0 (a guess) to 1 (steady progress over many samples).
    pub confidence: f64,
    /// The smoothed rate, percent per second.
    pub rate_per_second: f64,
    /// Rate samples behind it.
    pub samples: u32,
}

impl EtaState {
    /// The state after `stage` reported `progress` (0..=100) at `at_ms`.
    /// Progress that went backwards (a reset, a retry) starts the stage over.
    pub fn observe(&self, stage: &str, progress: f64, at_ms: i64) -> EtaState {
        let mut next = self.clone();
        let progress = progress.clamp(0.0, 100.0);
        let fresh = StageRate {
            rate: 0.0,
            var: 0.0,
            progress,
            at_ms,
            samples: 0,
        };
        let entry = next.stages.entry(stage.to_string()).or_insert(fresh);
        if progress < entry.progress || at_ms < entry.at_ms {
            *entry = fresh;
            return next;
        }
        let dt_ms = at_ms - entry.at_ms;
        if dt_ms < MIN_SAMPLE_MS {
            return next;
        }
        let inst = (progress - entry.progress) / (dt_ms as f64 / 1000.0);
        if entry.samples == 0 {
            entry.rate = inst;
            entry.var = 0.0;
        } else {
            let diff = inst - entry.rate;
            entry.rate += ALPHA * diff;
            entry.var = (1.0 - ALPHA) * (entry.var + ALPHA * diff * diff);
        }
        entry.progress = progress;
        entry.at_ms = at_ms;
        entry.samples = entry.samples.saturating_add(1);
        next
    }

    /// The estimate for `stage` at `progress`, or `None` before it has a
    /// positive rate.
    pub fn estimate(&self, stage: &str, progress: f64) -> Option<Eta> {
        let s = self.stages.get(stage)?;
        if s.samples == 0 || !s.rate.is_finite() || s.rate <= 0.0 {
            return None;
        }
        let left = (100.0 - progress.clamp(0.0, 100.0)).max(0.0);
        let sd = s.var.max(0.0).sqrt();
        let fast = s.rate + Z * sd;
        let slow = (s.rate - Z * sd).max(s.rate * SLOWEST_SHARE);
        let cv = sd / s.rate;
        let n = f64::from(s.samples);
        let confidence = (n / (n + 3.0)) / (1.0 + cv);
        Some(Eta {
            seconds: left / s.rate,
            low_seconds: left / fast,
            high_seconds: left / slow,
            confidence: confidence.clamp(0.0, 1.0),
            rate_per_second: s.rate,
            samples: s.samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(points: &[(f64, i64)]) -> EtaState {
        points
            .iter()
            .fold(EtaState::default(), |s, (p, t)| s.observe("upload", *p, *t))
    }

    #[test]
    fn steady_progress_gives_a_tight_confident_estimate() {
        // 2% per second, every second.
        let s = feed(&(0..=10).map(|i| (2.0 * i as f64, 1000 * i)).collect::<Vec<_>>());
        let eta = s.estimate("upload", 20.0).unwrap();
        assert!((eta.seconds - 40.0).abs() < 1e-6, "{eta:?}");
        assert!((eta.high_seconds - eta.low_seconds).abs() < 1e-6);
        assert!(eta.confidence > 0.7, "{eta:?}");
    }

    #[test]
    fn the_estimate_follows_the_recent_rate_not_a_line_from_the_start() {
        // A long stall, then 5% per second: a line from the start says ~1%/s.
        let mut pts = vec![(0.0, 0), (0.0, 30_000), (1.0, 60_000)];
        pts.extend((1..=10).map(|i| (1.0 + 5.0 * i as f64, 60_000 + 1000 * i)));
        let eta = feed(&pts).estimate("upload", 51.0).unwrap();
        assert!(eta.seconds < 15.0, "{eta:?}");
        assert!(eta.rate_per_second > 4.0);
    }

    #[test]
    fn jittery_progress_widens_the_band_and_lowers_confidence() {
        let steady = feed(&(0..=8).map(|i| (5.0 * i as f64, 1000 * i)).collect::<Vec<_>>());
        let jitter: Vec<(f64, i64)> = (0..=8)
            .map(|i| (5.0 * i as f64, 1000 * i + if i % 2 == 0 { 0 } else { 700 }))
            .collect();
        let jittery = feed(&jitter);
        let (a, b) = (
            steady.estimate("upload", 40.0).unwrap(),
            jittery.estimate("upload", 40.0).unwrap(),
        );
        assert!(b.high_seconds - b.low_seconds > a.high_seconds - a.low_seconds);
        assert!(b.confidence < a.confidence);
        assert!(b.low_seconds <= b.seconds && b.seconds <= b.high_seconds);
    }

    #[test]
    fn stages_are_separate_and_a_reset_starts_over() {
        let s = feed(&[(0.0, 0), (50.0, 1000)]).observe("parse", 10.0, 2000);
        assert!(s.estimate("parse", 10.0).is_none(), "one report is no rate yet");
        assert!(s.estimate("upload", 50.0).is_some());
        let reset = s.observe("upload", 0.0, 3000);
        assert!(reset.estimate("upload", 0.0).is_none());
    }

    #[test]
    fn reports_too_close_together_are_merged_and_no_progress_gives_no_estimate() {
        let s = feed(&[(0.0, 0), (10.0, 10)]);
        assert!(s.estimate("upload", 10.0).is_none());
        assert!(feed(&[(5.0, 0), (5.0, 1000)]).estimate("upload", 5.0).is_none());
    }
}
