//! When each gateway is refreshed: its change history (one record per stored fetch,
//! appended in the store so every instance learns from all of them), the plan that
//! spends the upstream budget where the changes are ([`crate::cadence`]), which
//! gateways a cron run finds due, and what the status shows of it.
//!
//! **One plan, shared.** Every instance computes the plan from the same stored
//! histories: each gateway's rate is estimated as of its own latest record (so it
//! depends on nothing but what is stored), and the plan from the rates and costs. An
//! instance reads the histories once a minute ([`PLAN_REREAD`]), not per request, and
//! folds its own looks in as it records them.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::cadence::{Demand, History, Mode, Record, Share, history::MAX_RECORDS};
use crate::clock::{iso8601, now_ms};
use crate::contract::{CadencePlanState, CadenceState};
use crate::entry::EntryMeta;
use crate::gateways::Gateway;
use crate::keys;

/// How long an instance plans from the histories it read, beside its own looks.
pub(crate) const PLAN_REREAD: Duration = Duration::from_secs(60);

/// The plan for the configured gateways (registry order), from their histories.
#[derive(Clone, Debug)]
pub(crate) struct CadencePlan {
    /// When this instance read the histories (its own clock).
    read_at_ms: u64,
    /// Shared, so that folding in one look copies no other gateway's records.
    histories: Vec<Arc<History>>,
    /// Each gateway's change rate (per second), as of its own latest record.
    rates: Vec<f64>,
    shares: Vec<Share>,
    budget_per_day: f64,
    /// The window each gateway's stored entry was given (`None`: no entry, past its
    /// window, or not read yet), read by the first look after the histories and
    /// updated by this instance's looks.
    in_force: Vec<Option<Duration>>,
    in_force_read: bool,
}

impl CadencePlan {
    fn new(app: &App, histories: Vec<History>, in_force: Vec<Option<Duration>>, read_at_ms: u64) -> Self {
        let settings = &app.config.cadence;
        let rates = histories.iter().map(|h| settings.rate(h, h.latest_ms())).collect();
        let histories = histories.into_iter().map(Arc::new).collect();
        Self::with_rates(app, histories, rates, in_force, read_at_ms)
    }

    fn with_rates(
        app: &App,
        histories: Vec<Arc<History>>,
        rates: Vec<f64>,
        in_force: Vec<Option<Duration>>,
        read_at_ms: u64,
    ) -> Self {
        let settings = &app.config.cadence;
        let demands: Vec<Demand> = histories
            .iter()
            .zip(&rates)
            .map(|(h, &rate)| Demand { rate, cost: h.cost() })
            .collect();
        CadencePlan {
            read_at_ms,
            budget_per_day: settings.budget_per_day(demands.iter().map(|d| d.cost)),
            shares: settings.shares(&demands),
            histories,
            rates,
            in_force,
            in_force_read: false,
        }
    }

    /// This plan with `history` as gateway `n`'s.
    fn with_history(&self, app: &App, n: usize, history: History) -> Self {
        let mut histories = self.histories.clone();
        let mut rates = self.rates.clone();
        rates[n] = app.config.cadence.rate(&history, history.latest_ms());
        histories[n] = Arc::new(history);
        let mut plan = Self::with_rates(app, histories, rates, self.in_force.clone(), self.read_at_ms);
        plan.in_force_read = self.in_force_read;
        plan
    }

    /// The window gateway `n` may be given now: its share of the plan, lengthened if
    /// the windows the others hold already spend more than the rest of the budget (a
    /// window given runs to its end, so the budget holds for the windows in force, not
    /// only for the plan, while the plan moves budget between gateways).
    fn window_now(&self, app: &App, n: usize) -> Duration {
        let (_, hi) = app.config.cadence.bounds();
        let cost = |i: usize| self.histories[i].cost();
        let others: f64 = (0..self.shares.len())
            .filter(|&i| i != n)
            .filter_map(|i| self.in_force[i].map(|w| cost(i) * 86_400.0 / w.as_secs_f64().max(1e-3)))
            .sum();
        let left = self.budget_per_day - others;
        let planned = self.shares[n].window;
        if left <= 0.0 {
            return hi.max(planned);
        }
        let affordable = Duration::try_from_secs_f64(cost(n) * 86_400.0 / left).unwrap_or(hi);
        planned.max(affordable.min(hi))
    }

    /// The windows, registry order.
    #[cfg(test)]
    pub(crate) fn windows(&self) -> Vec<Duration> {
        self.shares.iter().map(|s| s.window).collect()
    }

    /// The requests a day the plan spends, and its budget.
    pub(crate) fn spend(&self) -> (f64, f64) {
        (
            self.shares.iter().map(|s| s.requests_per_day).sum(),
            self.budget_per_day,
        )
    }
}

impl App {
    /// The plan, from the histories this instance read within [`PLAN_REREAD`] (read
    /// now otherwise).
    pub(crate) async fn cadence_plan(&self) -> Arc<CadencePlan> {
        let current = || {
            let now = now_ms();
            self.cadence_plan
                .lock()
                .as_ref()
                .filter(|plan| now.saturating_sub(plan.read_at_ms) < PLAN_REREAD.as_millis() as u64)
                .cloned()
        };
        if let Some(plan) = current() {
            return plan;
        }
        let _one_reader = self.cadence_plan_reading.lock().await;
        if let Some(plan) = current() {
            return plan;
        }
        let now = now_ms();
        let histories = futures_util::future::join_all(
            self.registry
                .all()
                .iter()
                .map(|g| async move { self.history(&keys::gateway(&g.id)).await }),
        )
        .await;
        // The windows in force are read by the first look that needs them, not here:
        // the status, which reads the plan too, stays a few commands.
        let unknown = vec![None; histories.len()];
        let plan = Arc::new(CadencePlan::new(self, histories, unknown, now));
        *self.cadence_plan.lock() = Some(plan.clone());
        plan
    }

    /// Forget the plan: the next use reads every history again.
    #[cfg(test)]
    pub(crate) fn forget_cadence_plan(&self) {
        *self.cadence_plan.lock() = None;
    }

    /// Record that a fetch of `gateway` found content `etag` in a listing of
    /// `requests` upstream requests, and say which fresh window it earns now (`None`
    /// in `fixed` mode: the default). Called once the answer is judged fit to store
    /// (a held or rejected answer is no observation), inside the fetch, which holds
    /// the key's lock: no other instance records the same look. The look is dated by
    /// the store's clock, so a skewed instance cannot misdate it; a look not after the
    /// last recorded one counts nothing. A history the store cannot give or take
    /// costs the observation, never the fetch.
    pub(crate) async fn observe(&self, gateway: &Gateway, etag: &str, requests: u32) -> Option<Duration> {
        let key = keys::gateway(&gateway.id);
        let plan = self.cadence_plan().await;
        let n = self.registry.all().iter().position(|g| g.id == gateway.id)?;
        let at = self.store().time_ms().await.unwrap_or_else(|_| now_ms());
        // This gateway's history as stored now (another instance may have added to it).
        let mut history = match self.store().list(&keys::cadence(&key)).await {
            Ok(list) => History {
                records: History::read(&list, None).records,
                previous_release: plan.histories[n].previous_release.clone(),
            },
            Err(_) => History::clone(&plan.histories[n]),
        };
        if let Some(record) = Record::after(history.last(), at, etag, requests) {
            if let Err(e) = self
                .store()
                .append_capped(&keys::cadence(&key), record.encode(), MAX_RECORDS, keys::CADENCE_TTL)
                .await
            {
                tracing::debug!("[Cache Fetch] {key}: change history not stored ({e})");
            }
            history.push(record);
        }
        if !plan.in_force_read {
            self.read_windows_in_force().await;
        }
        let window = {
            let mut cached = self.cadence_plan.lock();
            // Fold the look into the newest plan this instance has (another look may
            // have replaced `plan` meanwhile).
            let base = cached.clone().unwrap_or(plan);
            let mut updated = base.with_history(self, n, history);
            let window = updated.window_now(self, n);
            updated.in_force[n] = Some(window);
            *cached = Some(Arc::new(updated));
            window
        };
        (self.config.cadence.mode == Mode::Learned).then_some(window)
    }

    /// Fold into the plan the window each configured gateway's stored entry holds
    /// (`None`: no entry, or past its window): once per reading of the histories, by
    /// one reader (a warm's concurrent looks would otherwise each read them all).
    async fn read_windows_in_force(&self) {
        let _one_reader = self.cadence_plan_reading.lock().await;
        if self.cadence_plan.lock().as_ref().is_none_or(|p| p.in_force_read) {
            return;
        }
        let now = now_ms();
        let stored = futures_util::future::join_all(self.registry.all().iter().map(|g| async move {
            let clock = self.cache.peek_meta_in_store(&keys::gateway(&g.id)).await?.clock;
            (clock.fresh_until_ms > now)
                .then(|| Duration::from_millis(clock.fresh_until_ms.saturating_sub(clock.fetched_at_ms)))
        }))
        .await;
        let mut cached = self.cadence_plan.lock();
        if let Some(plan) = cached.as_ref().filter(|p| !p.in_force_read) {
            let mut updated = CadencePlan::clone(plan);
            for (held, read) in updated.in_force.iter_mut().zip(stored) {
                *held = held.or(read);
            }
            updated.in_force_read = true;
            *cached = Some(Arc::new(updated));
        }
    }

    /// The change history of `key`: this release's records and the previous release's
    /// observations.
    pub(crate) async fn history(&self, key: &str) -> History {
        let (ours, theirs) = (keys::cadence(key), keys::previous_cadence(key));
        let (list, previous) = futures_util::join!(self.store().list(&ours), self.store().get(&theirs));
        let previous = previous.ok().flatten();
        History::read(&list.unwrap_or_default(), previous.as_deref())
    }

    /// The gateways of `gateways` whose fresh window ends within the due horizon (or
    /// that have no entry of their own), and the others with the instant they become
    /// due (unix ms).
    pub(crate) async fn due(&self, gateways: &[Gateway]) -> (Vec<Gateway>, Vec<(Gateway, u32, u64)>) {
        let horizon = self.config.due_horizon.as_millis() as u64;
        let now = now_ms();
        let metas = futures_util::future::join_all(
            gateways
                .iter()
                .map(|g| async move { self.cache.peek_meta_in_store(&keys::gateway(&g.id)).await }),
        )
        .await;
        let (mut due, mut later) = (Vec::new(), Vec::new());
        for (g, meta) in gateways.iter().zip(metas) {
            match meta {
                Some(m) if !m.held() && m.clock.fresh_until_ms > now.saturating_add(horizon) => {
                    later.push((g.clone(), m.item_count, m.clock.fresh_until_ms - horizon));
                }
                _ => due.push(g.clone()),
            }
        }
        (due, later)
    }

    /// What the status shows of `gateway`'s cadence, from `plan`; `meta` is its
    /// entry's header.
    pub(crate) fn cadence_state(
        &self,
        plan: &CadencePlan,
        gateway: &Gateway,
        meta: Option<&EntryMeta>,
    ) -> Option<CadenceState> {
        let n = self.registry.all().iter().position(|g| g.id == gateway.id)?;
        let (history, share) = (&plan.histories[n], &plan.shares[n]);
        let observations = history.observations();
        let now = now_ms();
        let fresh_until = meta.map(|m| m.clock.fresh_until_ms);
        let horizon = self.config.due_horizon.as_millis() as u64;
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        Some(CadenceState {
            mode: self.config.cadence.mode.as_str().to_string(),
            change_rate_per_day: round(plan.rates[n] * 86_400.0),
            observations: observations.len() as u32,
            changes: observations.iter().filter(|o| o.changed).count() as u32,
            fresh_for_seconds: share.window.as_secs(),
            planned_listings_per_day: round(share.listings_per_day),
            requests_per_listing: history.cost() as u32,
            expected_lag_seconds: share.expected_lag.as_secs(),
            next_due_at: fresh_until.map(|f| iso8601(f.saturating_sub(horizon).max(now))),
        })
    }

    /// What the status shows of the plan as a whole.
    pub(crate) fn cadence_plan_state(&self, plan: &CadencePlan) -> CadencePlanState {
        let (spent, budget) = plan.spend();
        let rate: f64 = plan.rates.iter().sum();
        // The mean lag of a change, whichever gateway it is on: rate-weighted.
        let lag = plan
            .rates
            .iter()
            .zip(&plan.shares)
            .map(|(r, s)| r * s.expected_lag.as_secs_f64())
            .sum::<f64>()
            / rate.max(f64::MIN_POSITIVE);
        let round = |x: f64| (x * 10.0).round() / 10.0;
        CadencePlanState {
            mode: self.config.cadence.mode.as_str().to_string(),
            budget_requests_per_day: round(budget),
            planned_requests_per_day: round(spent),
            expected_lag_seconds: lag.round() as u64,
        }
    }
}
