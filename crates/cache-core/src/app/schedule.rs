//! When each gateway is refreshed: its change history (one observation per stored
//! fetch, in the store so every instance learns from all of them), the fresh window
//! it earns ([`crate::cadence`]), which gateways a cron run finds due, and what the
//! status shows of it. App operations, beside warming and the catalog.

use std::time::Duration;

use bytes::Bytes;

use crate::app::App;
use crate::cadence::{History, Mode};
use crate::clock::{iso8601, now_ms};
use crate::contract::CadenceState;
use crate::entry::EntryMeta;
use crate::gateways::Gateway;
use crate::keys;

impl App {
    /// Record that a fetch of `key` that started at `at_ms` found content `etag`, and
    /// say which fresh window the gateway earns now (`None` in `fixed` mode: the
    /// default, exactly as before). Runs inside the fetch, which holds the key's
    /// lock: no other instance records the same look, and a look older than the last
    /// recorded one counts nothing. A history the store cannot give or take costs the
    /// observation, never the fetch.
    pub(crate) async fn observe(&self, key: &str, at_ms: u64, etag: &str) -> Option<Duration> {
        let mut history = self.history(key).await.unwrap_or_default();
        if history.observe(at_ms, etag) || history.observations.is_empty() {
            let json = serde_json::to_vec(&history).expect("serializable");
            if let Err(e) = self
                .store()
                .set(&keys::cadence(key), Bytes::from(json), keys::CADENCE_TTL)
                .await
            {
                tracing::debug!("[Cache Fetch] {key}: change history not stored ({e})");
            }
        }
        let settings = self.config.cadence;
        (settings.mode == Mode::Learned).then(|| settings.window(&history, at_ms).0)
    }

    /// The change history of `key`, if any is stored.
    pub(crate) async fn history(&self, key: &str) -> Option<History> {
        let raw = self.store().get(&keys::cadence(key)).await.ok()??;
        serde_json::from_slice(&raw).ok()
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

    /// What the status shows of `gateway`'s cadence; `meta` is its entry's header.
    pub(crate) async fn cadence_state(&self, gateway: &Gateway, meta: Option<&EntryMeta>) -> CadenceState {
        let key = keys::gateway(&gateway.id);
        let history = self.history(&key).await.unwrap_or_default();
        let settings = self.config.cadence;
        let now = now_ms();
        let (window, rate) = settings.window(&history, now);
        let fresh_until = meta.map(|m| m.clock.fresh_until_ms);
        let horizon = self.config.due_horizon.as_millis() as u64;
        CadenceState {
            mode: settings.mode.as_str().to_string(),
            change_rate_per_day: (rate * 86_400.0 * 1000.0).round() / 1000.0,
            observations: history.observations.len() as u32,
            changes: history.changes() as u32,
            fresh_for_seconds: window.as_secs(),
            next_due_at: fresh_until.map(|f| iso8601(f.saturating_sub(horizon).max(now))),
        }
    }
}
