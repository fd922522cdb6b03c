//! A gateway's refresh cadence: how often each catalog changes, learned from its own
//! history, and how often it is listed, planned within one upstream budget.
//!
//! **The objective.** Spend `REFRESH_BUDGET` upstream requests a day (by default what
//! `fixed` spends) where the changes are, so that the mean time from an upstream
//! change to the page serving it is least ([`plan`]: the square-root rule). The fixed
//! window is one feasible point of that problem, so the plan is never worse at the
//! same cost.
//!
//! **The evidence.** Every stored fetch of a gateway is an observation ([`history`]):
//! the catalog changed since the last look or it did not, and how long ago that look
//! was. That is all anyone knows: not *when* it changed, nor how often in between
//! (irregular, censored checks). Modelling changes as a Poisson process of rate λ, the
//! chance that an interval of length `t` saw at least one change is `1 - e^(-λt)`; the
//! log-likelihood of the observations is
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
//! - **A prior**: `ln λ` is Normal around `ln λ₀`, the rate at which the default
//!   window (`MODELS_FRESH_TTL_SECONDS`) sees a change with probability
//!   [`PRIOR_CHANGE_CHANCE`], with a spread of [`PRIOR_SPREAD`] (a factor of e). With
//!   no evidence every gateway has the same rate, so the plan gives each what `fixed`
//!   does; a few looks move it part of the way; days of looks rule. On the log scale
//!   the prior pulls in proportion to how far the estimate is, never like hours of
//!   invented watching (a Gamma prior does that, and drags a busy catalog's rate down).
//! - **Forgetting**: each observation weighs `0.5^(age / HALF_LIFE)`, and at most
//!   [`history::MAX_RECORDS`] are kept: behaviour from weeks ago does not rule today.
//!
//! The maximum is found by bisection on the derivative in `u = ln λ`, which falls
//! monotonically (every term does: `x / (e^x - 1)` falls in `x = λt`), so it exists
//! and is unique for any evidence, including none, all changed, or none changed.
//!
//! The windows then follow from the rates and each listing's cost, within the budget
//! and `[MODELS_FRESH_MIN_SECONDS, MODELS_FRESH_MAX_SECONDS]` ([`plan::plan`]).

pub(crate) mod history;
pub(crate) mod plan;

use std::time::Duration;

pub(crate) use history::{History, Observation, Record};
pub(crate) use plan::{Demand, Share};

/// An observation's weight halves every week.
pub(crate) const HALF_LIFE: Duration = Duration::from_secs(7 * 86_400);
/// The prior's standard deviation of `ln λ`.
pub(crate) const PRIOR_SPREAD: f64 = 1.0;
/// The prior's centre: the rate at which the default window sees a change with this
/// chance (once in about 9.5 default windows: 38 h at the 4 h default).
pub(crate) const PRIOR_CHANGE_CHANCE: f64 = 0.1;

/// The cron's interval (`vercel.json`: `0 */3 * * *`). In `fixed` mode the cron lists
/// every gateway at each run, so `fixed` lists a gateway every
/// `min(MODELS_FRESH_TTL_SECONDS, CRON_INTERVAL)`: what the default budget matches.
pub(crate) const CRON_INTERVAL: Duration = Duration::from_secs(3 * 3600);

/// `REFRESH_CADENCE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each gateway's window planned from the change rates within the budget (the
    /// default).
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

/// `REFRESH_BUDGET`: upstream requests per day across the configured gateways.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// This many requests per day.
    PerDay(f64),
    /// This multiple of what `fixed` spends on the same gateways (`1` is the default).
    OfFixed(f64),
}

/// The cadence settings (from [`crate::config::Config`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CadenceSettings {
    pub mode: Mode,
    /// `MODELS_FRESH_TTL_SECONDS`: the prior, the default budget, and every window in
    /// `fixed` mode.
    pub default_window: Duration,
    /// `REFRESH_BUDGET`.
    pub budget: Budget,
    /// `MODELS_FRESH_MIN_SECONDS` / `MODELS_FRESH_MAX_SECONDS`.
    pub min_window: Duration,
    pub max_window: Duration,
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
    /// The rate at the prior's centre.
    pub(crate) fn prior_rate(&self) -> f64 {
        -(1.0 - PRIOR_CHANGE_CHANCE).ln() / self.default_window.as_secs_f64().max(1e-3)
    }

    /// The change rate (per second) `history` shows as of `as_of_ms`.
    pub(crate) fn rate(&self, history: &History, as_of_ms: u64) -> f64 {
        estimate_rate(&history.observations(), self.prior_rate(), as_of_ms)
    }

    /// The bounds of a window, which always admit the default one (a default under the
    /// floor lowers the floor: with no evidence a gateway gets exactly the default).
    pub(crate) fn bounds(&self) -> (Duration, Duration) {
        (
            self.min_window.min(self.default_window),
            self.max_window.max(self.default_window),
        )
    }

    /// Requests per day the plan may spend on gateways whose listings cost `costs`:
    /// `REFRESH_BUDGET`, relative to what `fixed` spends on them (each listed every
    /// `min(MODELS_FRESH_TTL_SECONDS, CRON_INTERVAL)`).
    pub(crate) fn budget_per_day(&self, costs: impl Iterator<Item = f64>) -> f64 {
        let interval = self.default_window.min(CRON_INTERVAL).as_secs_f64().max(1e-3);
        let fixed = costs.sum::<f64>() * 86_400.0 / interval;
        match self.budget {
            Budget::PerDay(n) => n,
            Budget::OfFixed(f) => f * fixed,
        }
    }

    /// Each gateway's share for `demands` (the default window for all in `fixed` mode).
    pub(crate) fn shares(&self, demands: &[Demand]) -> Vec<Share> {
        match self.mode {
            Mode::Fixed => {
                let w = self.default_window;
                demands
                    .iter()
                    .map(|d| {
                        // The cron lists every gateway at each run.
                        let listings_per_day = 86_400.0 / w.min(CRON_INTERVAL).as_secs_f64().max(1e-3);
                        Share {
                            window: w,
                            listings_per_day,
                            requests_per_day: listings_per_day * d.cost,
                            expected_lag: w / 2,
                        }
                    })
                    .collect()
            }
            Mode::Learned => {
                let (lo, hi) = self.bounds();
                plan::plan(demands, self.budget_per_day(demands.iter().map(|d| d.cost)), lo, hi)
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
            budget: Budget::OfFixed(1.0),
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
        // No evidence: every gateway what `fixed` gives it (the cron's 3 h, under the
        // 4 h default window).
        let shares = s.shares(
            &[Demand {
                rate: s.rate(&History::default(), 0),
                cost: 1.0,
            }; 3],
        );
        for sh in &shares {
            assert!((sh.window.as_secs_f64() / 10_800.0 - 1.0).abs() < 1e-3, "{sh:?}");
        }
        // One change in one 3-hour look barely moves the rate.
        let one = [Observation {
            at_ms: 3 * HOUR_MS,
            interval_ms: 3 * HOUR_MS,
            changed: true,
        }];
        let ratio = estimate_rate(&one, s.prior_rate(), 3 * HOUR_MS) / s.prior_rate();
        assert!((1.0..8.0).contains(&ratio), "higher, not wild: {ratio}");
    }

    #[test]
    fn every_edge_has_an_answer_and_fixed_is_the_default() {
        let s = settings();
        let all_changed: Vec<Observation> = (1..=100)
            .map(|i| Observation {
                at_ms: i * 60_000,
                interval_ms: 60_000,
                changed: true,
            })
            .collect();
        let now = 100 * 60_000;
        let busy = estimate_rate(&all_changed, s.prior_rate(), now);
        assert!(busy.is_finite() && busy > s.prior_rate());
        let none: Vec<Observation> = all_changed
            .iter()
            .map(|o| Observation { changed: false, ..*o })
            .collect();
        let quiet = estimate_rate(&none, s.prior_rate(), now);
        assert!(quiet.is_finite() && quiet > 0.0 && quiet < s.prior_rate());
        let fixed = CadenceSettings { mode: Mode::Fixed, ..s };
        let shares = fixed.shares(&[Demand { rate: busy, cost: 1.0 }, Demand { rate: quiet, cost: 5.0 }]);
        assert!(shares.iter().all(|sh| sh.window == Duration::from_secs(14_400)));
        // The cron lists every gateway every 3 h: 8 listings a day, not 6.
        assert_eq!(shares[1].requests_per_day, 40.0);
        assert_eq!(s.budget_per_day([1.0, 5.0].into_iter()), 48.0);
        let half = CadenceSettings {
            budget: Budget::OfFixed(0.5),
            ..s
        };
        assert_eq!(half.budget_per_day([1.0, 5.0].into_iter()), 24.0);
        let set = CadenceSettings {
            budget: Budget::PerDay(7.0),
            ..s
        };
        assert_eq!(set.budget_per_day([1.0, 5.0].into_iter()), 7.0);
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
        let rate = estimate_rate(&obs, s.prior_rate(), now);
        assert!(
            rate <= s.prior_rate(),
            "the busy month is forgotten: {rate} vs {}",
            s.prior_rate()
        );
    }
}
