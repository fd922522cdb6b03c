//! The budget's plan: how often each gateway is listed, so that the upstream work
//! stays within `REFRESH_BUDGET` and the expected change-to-served lag is least.
//!
//! Gateway `i` changes at rate `λᵢ` (per second) and one listing of it costs `cᵢ`
//! upstream requests. Listed every `Iᵢ`, a change waits `Iᵢ / 2` on average to be
//! served, and the listings cost `cᵢ / Iᵢ` per second. The plan solves
//!
//! ```text
//!   minimise  Σ λᵢ Iᵢ / 2    subject to  Σ cᵢ · 86400 / Iᵢ ≤ B,   Iᵢ ∈ [lo, hi]
//! ```
//!
//! (Cho & Garcia-Molina, "Synchronizing a database to improve freshness", SIGMOD
//! 2000, for the time-to-serve objective.) The Lagrangian gives `Iᵢ = √(cᵢ / (μ λᵢ))`:
//! the square-root rule. A busy gateway is listed more often than a quiet one, but
//! only by the square root of their rates; a costly listing less often. The clamp to
//! `[lo, hi]` is water-filling: a window held at a bound frees (or takes) budget that
//! `μ` gives to the others, found by bisection so that the plan spends the budget and
//! no more. Read weights are all 1 (see `docs/design.md` for why).

use std::time::Duration;

/// One gateway, as the plan sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Demand {
    /// Changes per second.
    pub rate: f64,
    /// Upstream requests per listing.
    pub cost: f64,
}

/// One gateway's share of the budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Share {
    pub window: Duration,
    /// Listings per day at that window, and their requests.
    pub listings_per_day: f64,
    pub requests_per_day: f64,
    /// Mean time from a change to the next listing: half the window.
    pub expected_lag: Duration,
}

/// Windows for `demands` within `budget` requests per day, each in `[lo, hi]`. When
/// even every window at `hi` costs more than the budget, every window is `hi` (the
/// plan then says it is over: the bounds win over the budget).
pub(crate) fn plan(demands: &[Demand], budget_per_day: f64, lo: Duration, hi: Duration) -> Vec<Share> {
    let (lo, hi) = (lo.as_secs_f64().max(1e-3), hi.as_secs_f64().max(lo.as_secs_f64()));
    let demands: Vec<Demand> = demands
        .iter()
        .map(|d| Demand {
            rate: if d.rate.is_finite() { d.rate.max(1e-12) } else { 1e3 },
            cost: if d.cost.is_finite() { d.cost.max(1e-6) } else { 1.0 },
        })
        .collect();
    let windows_at = |ln_mu: f64| -> Vec<f64> {
        let mu = ln_mu.exp();
        demands
            .iter()
            .map(|d| (d.cost / (mu * d.rate)).sqrt().clamp(lo, hi))
            .collect()
    };
    let spend = |windows: &[f64]| -> f64 { demands.iter().zip(windows).map(|(d, w)| d.cost * 86_400.0 / w).sum() };
    let all = |w: f64| vec![w; demands.len()];
    let windows = if spend(&all(hi)) >= budget_per_day {
        all(hi)
    } else if spend(&all(lo)) <= budget_per_day {
        all(lo)
    } else {
        // Spend grows with μ; every window is at `hi` below `low` and at `lo` above `high`.
        let ln = |d: &Demand, w: f64| (d.cost / (d.rate * w * w)).ln();
        let mut low = demands.iter().map(|d| ln(d, hi)).fold(f64::INFINITY, f64::min);
        let mut high = demands.iter().map(|d| ln(d, lo)).fold(f64::NEG_INFINITY, f64::max);
        for _ in 0..200 {
            let mid = (low + high) / 2.0;
            if spend(&windows_at(mid)) <= budget_per_day {
                low = mid;
            } else {
                high = mid;
            }
        }
        windows_at(low)
    };
    demands
        .iter()
        .zip(windows)
        .map(|(d, w)| {
            // Whole milliseconds, rounded up: a window never costs more than planned.
            let window = Duration::from_millis((w * 1000.0).ceil() as u64);
            let listings_per_day = 86_400.0 / window.as_secs_f64();
            Share {
                window,
                listings_per_day,
                requests_per_day: listings_per_day * d.cost,
                expected_lag: window / 2,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: f64 = 3600.0;
    const LO: Duration = Duration::from_secs(900);
    const HI: Duration = Duration::from_secs(86_400);

    fn spent(shares: &[Share]) -> f64 {
        shares.iter().map(|s| s.requests_per_day).sum()
    }

    #[test]
    fn equal_demands_share_equally_and_spend_the_budget() {
        let d = vec![Demand { rate: 1e-5, cost: 1.0 }; 4];
        let p = plan(&d, 4.0 * 6.0, LO, HI);
        for s in &p {
            assert!((s.window.as_secs_f64() / (4.0 * HOUR) - 1.0).abs() < 1e-6, "{s:?}");
        }
        assert!(spent(&p) <= 24.0 && spent(&p) > 23.99, "{}", spent(&p));
    }

    #[test]
    fn the_square_root_rule() {
        // Four times the rate: half the window. Four times the cost: twice the window.
        let d = [
            Demand { rate: 4e-5, cost: 1.0 },
            Demand { rate: 1e-5, cost: 1.0 },
            Demand { rate: 1e-5, cost: 4.0 },
        ];
        let p = plan(&d, 12.0, LO, HI);
        let w: Vec<f64> = p.iter().map(|s| s.window.as_secs_f64()).collect();
        assert!((w[1] / w[0] - 2.0).abs() < 1e-3, "{w:?}");
        assert!((w[2] / w[1] - 2.0).abs() < 1e-3, "{w:?}");
        assert!(spent(&p) <= 12.0 + 1e-9);
    }

    #[test]
    fn what_a_bound_frees_goes_to_the_others_and_the_budget_always_holds() {
        let mut rng = fastrand::Rng::with_seed(36);
        for _ in 0..500 {
            let n = rng.usize(1..40);
            let d: Vec<Demand> = (0..n)
                .map(|_| Demand {
                    rate: 10f64.powf(rng.f64() * 8.0 - 9.0),
                    cost: 1.0 + rng.u32(0..30) as f64,
                })
                .collect();
            let budget = 10f64.powf(rng.f64() * 4.0);
            let p = plan(&d, budget, LO, HI);
            let at_hi = d.iter().map(|d| d.cost).sum::<f64>();
            let at_lo = at_hi * 96.0;
            let s = spent(&p);
            if budget >= at_hi {
                assert!(s <= budget * (1.0 + 1e-9), "over budget: {s} > {budget}");
            }
            // Spends it all unless every window sits at a bound.
            if budget > at_hi && budget < at_lo {
                assert!(s >= budget * 0.999, "under-spent: {s} of {budget}");
            }
            for x in &p {
                assert!(x.window >= LO && x.window <= HI + Duration::from_millis(1), "{x:?}");
            }
        }
        // A quiet gateway held at the ceiling: the others share what it leaves.
        let d = [Demand { rate: 1e-9, cost: 1.0 }, Demand { rate: 1e-4, cost: 1.0 }];
        let p = plan(&d, 12.0, LO, HI);
        assert_eq!(p[0].window, HI);
        assert!((spent(&p) - 12.0).abs() < 1e-3, "{p:?}");
        // Below what the ceiling costs: every window at the ceiling.
        assert!(plan(&d, 1.0, LO, HI).iter().all(|s| s.window == HI));
        // Above what the floor costs: every window at the floor.
        assert!(plan(&d, 1e6, LO, HI).iter().all(|s| s.window == LO));
        assert!(plan(&[], 10.0, LO, HI).is_empty());
    }
}
