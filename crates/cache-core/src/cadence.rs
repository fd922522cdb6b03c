//! A gateway's refresh cadence, learned from its own history.
//!
//! Every fetch of a gateway is an observation: the catalog changed since the last
//! look or it did not, and how long ago that look was. That is all anyone knows:
//! not *when* it changed, nor how often in between (irregular, censored checks).
//! Modelling changes as a Poisson process of rate λ, the chance that an interval of
//! length `t` saw at least one change is `1 - e^(-λt)`; the log-likelihood of the
//! observations is
//!
//! ```text
//!   Σ_changed  w_i · ln(1 - e^(-λ t_i))  -  λ · Σ_unchanged  w_j · t_j
//! ```
//!
//! Cho & Garcia-Molina ("Estimating frequency of change", ACM TOIT 2003) show that
//! maximising it (their estimator for irregular access) is what works on such
//! evidence, where the naive "changes ÷ time" underestimates busy pages badly (it
//! counts at most one change per interval). Two additions:
//!
//! - **A prior**: `ln λ` is Normal around `ln λ₀`, the rate that gives the configured
//!   default window (`MODELS_FRESH_TTL_SECONDS`), with a spread of [`PRIOR_SPREAD`]
//!   (a factor of e). With no evidence the estimate *is* the default; a few looks
//!   move it part of the way; days of looks rule. On the log scale the prior pulls
//!   in proportion to how far the estimate is, never like hours of invented
//!   watching (a Gamma prior does that, and drags a busy catalog's rate down).
//! - **Forgetting**: each observation weighs `0.5^(age / HALF_LIFE)`, and at most
//!   [`MAX_OBSERVATIONS`] are kept: behaviour from weeks ago does not rule today.
//!
//! The maximum is found by bisection on the derivative in `u = ln λ`, which falls
//! monotonically (every term does: `x / (e^x - 1)` falls in `x = λt`), so it exists
//! and is unique for any evidence, including none, all changed, or none changed.
//!
//! The window is then the time within which the catalog changes with probability at
//! most `p` (`REFRESH_STALE_TARGET`): `-ln(1 - p) / λ`, clamped to
//! `[MODELS_FRESH_MIN_SECONDS, MODELS_FRESH_MAX_SECONDS]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Observations kept per gateway (the oldest go first).
pub(crate) const MAX_OBSERVATIONS: usize = 128;
/// An observation's weight halves every week.
pub(crate) const HALF_LIFE: Duration = Duration::from_secs(7 * 86_400);
/// The prior's standard deviation of `ln λ`.
pub(crate) const PRIOR_SPREAD: f64 = 1.0;

/// `REFRESH_CADENCE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each gateway's fresh window from its own history (the default).
    Learned,
    /// Every gateway gets `MODELS_FRESH_TTL_SECONDS`, and the cron refreshes all of them.
    Fixed,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Learned => "learned",
            Mode::Fixed => "fixed",
        }
    }
}

/// The cadence settings (from [`crate::config::Config`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CadenceSettings {
    pub mode: Mode,
    /// `MODELS_FRESH_TTL_SECONDS`: the prior, and every window in `fixed` mode.
    pub default_window: Duration,
    /// `REFRESH_STALE_TARGET`: the chance of a change within the window.
    pub stale_target: f64,
    /// `MODELS_FRESH_MIN_SECONDS` / `MODELS_FRESH_MAX_SECONDS`.
    pub min_window: Duration,
    pub max_window: Duration,
}

/// One look at the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Observation {
    /// When (unix ms).
    pub at_ms: u64,
    /// Since the previous look (ms).
    pub interval_ms: u64,
    pub changed: bool,
}

/// What is stored per gateway (`cadence:<key>`, JSON): the last look and the
/// recent observations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct History {
    /// The last look: when, and the content's ETag then.
    pub last_ms: u64,
    pub last_etag: String,
    pub observations: Vec<Observation>,
}

impl History {
    /// Add a look at `at_ms` that found `etag`. The first look is no observation (no
    /// interval); a look not after the last one (a slower fetch that started
    /// earlier, or a second instance's view of the same fetch) counts nothing.
    pub(crate) fn observe(&mut self, at_ms: u64, etag: &str) -> bool {
        if self.last_ms == 0 {
            self.last_ms = at_ms;
            self.last_etag = etag.to_string();
            return false;
        }
        if at_ms <= self.last_ms {
            return false;
        }
        self.observations.push(Observation {
            at_ms,
            interval_ms: at_ms - self.last_ms,
            changed: etag != self.last_etag,
        });
        if self.observations.len() > MAX_OBSERVATIONS {
            let extra = self.observations.len() - MAX_OBSERVATIONS;
            self.observations.drain(..extra);
        }
        self.last_ms = at_ms;
        self.last_etag = etag.to_string();
        true
    }

    pub(crate) fn changes(&self) -> usize {
        self.observations.iter().filter(|o| o.changed).count()
    }
}

/// The change rate (per second) that best explains `observations` at `now_ms`,
/// given a prior centred on `prior_rate` (see the module doc).
pub(crate) fn estimate_rate(observations: &[Observation], prior_rate: f64, now_ms: u64) -> f64 {
    let half_life = HALF_LIFE.as_secs_f64();
    let weighted: Vec<(f64, f64, bool)> = observations
        .iter()
        .map(|o| {
            let age = now_ms.saturating_sub(o.at_ms) as f64 / 1000.0;
            (0.5f64.powf(age / half_life), o.interval_ms as f64 / 1000.0, o.changed)
        })
        .filter(|(w, t, _)| *w > 1e-6 && *t > 0.0)
        .collect();
    let unchanged_time: f64 = weighted.iter().filter(|o| !o.2).map(|(w, t, _)| w * t).sum();
    let centre = prior_rate.ln();
    // d/du of the log-posterior, u = ln λ: positive below the maximum, negative above.
    let slope = |u: f64| -> f64 {
        let rate = u.exp();
        let changed: f64 = weighted
            .iter()
            .filter(|o| o.2)
            .map(|(w, t, _)| {
                // λ · d/dλ ln(1 - e^(-λt)) = x / (e^x - 1), x = λt; stable for small x.
                let x = rate * t;
                w * x / x.exp_m1().max(f64::MIN_POSITIVE)
            })
            .sum();
        changed - rate * unchanged_time - (u - centre) / (PRIOR_SPREAD * PRIOR_SPREAD)
    };
    // Bisection between once a millennium and a thousand times a second.
    let (mut lo, mut hi) = (1e-11f64.ln(), 1e3f64.ln());
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if slope(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    ((lo + hi) / 2.0).exp()
}

impl CadenceSettings {
    /// The rate whose window is the default one: the prior's mode.
    pub(crate) fn prior_rate(&self) -> f64 {
        -(1.0 - self.stale_target).ln() / self.default_window.as_secs_f64().max(1e-3)
    }

    /// The change rate (per second) `history` shows at `now_ms`.
    pub(crate) fn rate(&self, history: &History, now_ms: u64) -> f64 {
        estimate_rate(&history.observations, self.prior_rate(), now_ms)
    }

    /// The fresh window for a change rate (per second), clamped to the bounds, which
    /// always admit the default window (a default under the floor lowers the floor:
    /// with no evidence a gateway gets exactly the default).
    pub(crate) fn window_for(&self, rate: f64) -> Duration {
        let secs = -(1.0 - self.stale_target).ln() / rate.max(1e-12);
        let (lo, hi) = (
            self.min_window.min(self.default_window),
            self.max_window.max(self.default_window),
        );
        Duration::try_from_secs_f64(secs).unwrap_or(hi).clamp(lo, hi)
    }

    /// The fresh window `history` earns at `now_ms` (the default in `fixed` mode),
    /// and the rate it was computed from.
    pub(crate) fn window(&self, history: &History, now_ms: u64) -> (Duration, f64) {
        match self.mode {
            Mode::Fixed => (self.default_window, self.prior_rate()),
            Mode::Learned => {
                let rate = self.rate(history, now_ms);
                (self.window_for(rate), rate)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3_600_000;

    fn settings() -> CadenceSettings {
        CadenceSettings {
            mode: Mode::Learned,
            default_window: Duration::from_secs(4 * 3600),
            stale_target: 0.1,
            min_window: Duration::from_secs(900),
            max_window: Duration::from_secs(86_400),
        }
    }

    /// Looks at `intervals` (hours), on a catalog changing at `per_hour`, decided by a
    /// seeded Poisson process.
    fn trace(intervals: impl Iterator<Item = f64>, per_hour: f64, seed: u64) -> (Vec<Observation>, u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (mut now, mut obs) = (0u64, Vec::new());
        for h in intervals {
            let ms = (h * HOUR_MS as f64) as u64;
            // P(at least one change in the interval) = 1 - e^(-λt).
            let changed = rng.f64() < 1.0 - (-per_hour * h).exp();
            now += ms;
            obs.push(Observation {
                at_ms: now,
                interval_ms: ms,
                changed,
            });
        }
        (obs, now)
    }

    fn per_hour(rate_per_s: f64) -> f64 {
        rate_per_s * 3600.0
    }

    #[test]
    fn converges_to_a_known_rate_on_regular_and_irregular_looks() {
        let prior = settings().prior_rate();
        for (true_rate, seed) in [(0.5, 1), (2.0, 2), (0.05, 3)] {
            // Regular: every 30 minutes for ten days, decayed little (weights near 1).
            let (obs, now) = trace(std::iter::repeat_n(0.5, 480), true_rate, seed);
            let est = per_hour(estimate_rate(&obs, prior, now));
            assert!(
                (est / true_rate - 1.0).abs() < 0.3,
                "regular looks, true {true_rate}/h: estimated {est:.3}/h"
            );
            // Irregular: intervals from 5 minutes to 6 hours.
            let mut rng = fastrand::Rng::with_seed(seed + 10);
            let (obs, now) = trace((0..400).map(|_| 0.08 + rng.f64() * 6.0), true_rate, seed);
            let est = per_hour(estimate_rate(&obs, prior, now));
            assert!(
                (est / true_rate - 1.0).abs() < 0.35,
                "irregular looks, true {true_rate}/h: estimated {est:.3}/h"
            );
        }
    }

    #[test]
    fn the_prior_holds_with_little_evidence() {
        let s = settings();
        assert!((estimate_rate(&[], s.prior_rate(), 0) / s.prior_rate() - 1.0).abs() < 1e-6);
        let (w, _) = s.window(&History::default(), 0);
        assert!(
            (w.as_secs_f64() / 14_400.0 - 1.0).abs() < 0.01,
            "no evidence: the default window, {w:?}"
        );
        // One change in one 3-hour look barely moves it.
        let one = [Observation {
            at_ms: 3 * HOUR_MS,
            interval_ms: 3 * HOUR_MS,
            changed: true,
        }];
        let rate = estimate_rate(&one, s.prior_rate(), 3 * HOUR_MS);
        let w = s.window_for(rate).as_secs_f64();
        assert!((3_600.0..14_400.0).contains(&w), "shorter, not collapsed: {w}");
    }

    #[test]
    fn windows_are_clamped_and_every_edge_has_an_answer() {
        let s = settings();
        let all_changed: Vec<Observation> = (1..=100)
            .map(|i| Observation {
                at_ms: i * 60_000,
                interval_ms: 60_000,
                changed: true,
            })
            .collect();
        let none_changed: Vec<Observation> = all_changed
            .iter()
            .map(|o| Observation {
                changed: false,
                interval_ms: 6 * HOUR_MS,
                ..*o
            })
            .collect();
        let now = 100 * 60_000;
        let busy = estimate_rate(&all_changed, s.prior_rate(), now);
        assert!(busy.is_finite() && busy > 0.0);
        assert_eq!(s.window_for(busy), Duration::from_secs(900), "clamped to the minimum");
        let quiet = estimate_rate(&none_changed, s.prior_rate(), now);
        assert!(quiet.is_finite() && quiet > 0.0);
        assert_eq!(
            s.window_for(quiet),
            Duration::from_secs(86_400),
            "clamped to the maximum"
        );
        assert_eq!(s.window_for(0.0), Duration::from_secs(86_400));
        assert_eq!(s.window_for(f64::INFINITY), Duration::from_secs(900));
        let fixed = CadenceSettings { mode: Mode::Fixed, ..s };
        let h = History {
            observations: all_changed,
            ..History::default()
        };
        assert_eq!(
            fixed.window(&h, now).0,
            Duration::from_secs(14_400),
            "fixed: the default"
        );
    }

    #[test]
    fn old_behaviour_fades() {
        let s = settings();
        // Changing every look a month ago, quiet for the last week.
        let mut obs: Vec<Observation> = (0..100)
            .map(|i| Observation {
                at_ms: i * HOUR_MS,
                interval_ms: HOUR_MS,
                changed: true,
            })
            .collect();
        let quiet_from = 30 * 24 * HOUR_MS;
        obs.extend((1..=28).map(|i| Observation {
            at_ms: quiet_from + i * 6 * HOUR_MS,
            interval_ms: 6 * HOUR_MS,
            changed: false,
        }));
        let now = quiet_from + 28 * 6 * HOUR_MS;
        let w = s.window_for(estimate_rate(&obs, s.prior_rate(), now));
        assert!(w >= Duration::from_secs(4 * 3600), "the busy month is forgotten: {w:?}");
    }

    #[test]
    fn a_look_counts_once_and_only_after_the_last() {
        let mut h = History::default();
        assert!(!h.observe(1_000, "a"), "the first look has no interval");
        assert!(h.observe(2_000, "a"));
        assert!(!h.observe(2_000, "b"), "the same instant again: not counted twice");
        assert!(!h.observe(1_500, "b"), "an older look: not counted");
        assert!(h.observe(3_000, "b"));
        assert_eq!((h.observations.len(), h.changes()), (2, 1));
        for i in 0..(MAX_OBSERVATIONS as u64 * 2) {
            h.observe(4_000 + i, "c");
        }
        assert_eq!(h.observations.len(), MAX_OBSERVATIONS, "bounded");
    }
}
