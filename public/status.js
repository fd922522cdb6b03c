// The status page's script (public/status.html): a file, so the CSP allows script-src 'self' only.
"use strict";
// Reads GET /api/cache/warm-models (the status JSON) and redraws in place every 30 s.
// A failed refresh keeps the last good view on screen and says what failed.
const REFRESH_MS = 30000;
const apiBase = window.gatewayzApiBase; // public/api-base.js
const cron = document.querySelector('meta[name="gatewayz-cron"]').content;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const num = (n) => (n == null ? "—" : Number(n).toLocaleString("en-US"));
const pct = (r) => (r == null ? "—" : `${(r * 100).toFixed(1)} %`);

function ago(seconds) {
  if (seconds == null) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} days`;
}
const since = (iso) => (iso ? (Date.now() - Date.parse(iso)) / 1000 : null);

// Age against the entry's own windows: green up to fresh_until, amber up to stale_until.
function ageBar(g) {
  if (g.age_seconds == null || !g.fresh_until || !g.stale_until) return `<div class="age" title="no data"></div>`;
  const fetched = Date.now() - g.age_seconds * 1000;
  const total = Date.parse(g.stale_until) - fetched;
  const fresh = Math.max(0, Math.min(1, (Date.parse(g.fresh_until) - fetched) / total));
  const now = g.age_seconds * 1000 / total;
  const title = `age ${ago(g.age_seconds)}; fresh until ${new Date(g.fresh_until).toLocaleString()}, stale until ${new Date(g.stale_until).toLocaleString()}`;
  // Positions go in data attributes and are applied through the CSSOM (place()): the
  // CSP allows no style attributes.
  return `<div class="age${now >= 1 ? " over" : ""}" title="${esc(title)}"><div class="f" data-width="${fresh * 100}"></div>` +
    `<div class="s" data-left="${fresh * 100}"></div>` +
    (now < 1 ? `<div class="now" data-left="${now * 100}" data-shift="1"></div>` : `<div class="now"></div>`) + `</div>`;
}

function stateLabel(g) {
  // Held back from the upstream's answer: why (the X-Cache-Fail-Safe-Reason words).
  const held = (g.fail_safe_reasons ?? []).filter((r) => r !== "expired");
  return `<span class="pill ${esc(g.state)}"><span class="dot"></span>${esc(g.state)}${g.fail_safe ? " · fail-safe" : ""}</span>` +
    held.map((r) => ` <span class="pill held" data-testid="held-${esc(r)}">${esc(r)}</span>`).join("");
}

// How often it is refreshed, in words: "changes ~3/day · refreshed every 2 h".
function every(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} days`;
}
function cadenceNote(g) {
  const c = g.cadence;
  if (!c) return "";
  const rate = c.change_rate_per_day >= 1 ? `~${Math.round(c.change_rate_per_day)}/day` : `~${Math.max(1, Math.round(c.change_rate_per_day * 7))}/week`;
  const plan = `${(c.planned_listings_per_day ?? 0).toFixed(1)} listings/day × ${c.requests_per_listing ?? 1} requests · lag ~${every(c.expected_lag_seconds ?? 0)}`;
  const what = c.mode === "fixed" ? `refreshed every ${every(c.fresh_for_seconds)} · ${plan}` : `changes ${rate} · refreshed every ${every(c.fresh_for_seconds)} · ${plan}`;
  const why = `${c.mode} cadence: ${c.changes} of the last ${c.observations} looks found a change; its share of the budget: ${plan}`;
  return `<div class="muted small" data-testid="cadence" title="${esc(why)}">${esc(what)}</div>`;
}

// The collapse guard's evidence, in words: "doubts 372 models: 1 of 3 answers, truth no earlier than 14:02".
function guardNote(g) {
  if (!g.held) return "";
  const h = g.held;
  return `<div class="muted" data-testid="guard-note">${esc(h.reason)}: ${num(h.observations)} of ${num(h.needed_observations)} answers agree; the truth no earlier than ${esc(new Date(h.confirm_after).toLocaleTimeString())}</div>`;
}

// The cadence's plan against its budget: "412 of 420 requests/day · mean lag ~1 h".
function planNote(p) {
  if (!p) return "";
  return `<dt>Upstream plan</dt><dd data-testid="cadence-plan">${num(Math.round(p.planned_requests_per_day))} of ${num(Math.round(p.budget_requests_per_day))} requests/day (${esc(p.mode)}) · mean lag ~${every(p.expected_lag_seconds)}</dd>`;
}

// Its last recorded change (/api/models/changes): "changed 2 h ago: +3 −1 · 2 repriced".
function changeNote(g) {
  const c = g.last_change;
  if (!c) return "";
  const n = c.counts;
  const parts = [n.added && `+${num(n.added)}`, n.removed && `−${num(n.removed)}`,
    n.repriced && `${num(n.repriced)} repriced`, n.changed && `${num(n.changed)} changed`].filter(Boolean);
  return `<div class="muted small" data-testid="last-change" title="${esc(c.at)}">changed ${ago(since(c.at))} ago: ${esc(parts.join(" · "))}</div>`;
}

function gatewayRow(g) {
  const failing = Boolean(g.last_error) && (!g.fresh_until || Date.parse(g.last_error.at) >= Date.now() - g.age_seconds * 1000);
  const error = g.last_error ? `<div class="err">${esc(g.last_error.error)}</div><div class="muted">${ago(since(g.last_error.at))} ago</div>` : `<span class="muted">—</span>`;
  return `<tr data-testid="gateway-row" data-gateway="${esc(g.gateway)}" data-state="${esc(g.state)}" class="${failing ? "failing" : ""}">` +
    `<td>${esc(g.gateway)}${cadenceNote(g)}</td><td>${stateLabel(g)}</td><td class="num">${num(g.models)}${changeNote(g)}</td>` +
    `<td>${ageBar(g)}<div class="muted small">${g.age_seconds == null ? "no data" : ago(g.age_seconds) + " old"}</div></td>` +
    `<td>${error}${guardNote(g)}</td></tr>`;
}

function meter(label, value, total, cls = "") {
  const share = total > 0 ? value / total : 0;
  return `<div class="meter"><span>${esc(label)}</span><div class="track"><div class="fill ${cls}" data-width="${(share * 100).toFixed(1)}"></div></div><span>${num(value)}</span></div>`;
}

function rate(label, r) {
  const cls = r == null ? "" : r >= 0.9 ? "" : r >= 0.6 ? "warn" : "bad";
  return `<div class="meter"><span>${esc(label)}</span><div class="track"><div class="fill ${cls}" data-width="${((r ?? 0) * 100).toFixed(1)}"></div></div><span>${pct(r)}</span></div>`;
}

// Next run of a Vercel cron schedule (UTC): minute and hour fields with *, */n, lists and ranges.
function nextCron(expr, from = new Date()) {
  const [min, hour, dom, mon, dow] = expr.trim().split(/\s+/);
  const matches = (field, v, lo) => field.split(",").some((part) => {
    const [range, step] = part.split("/");
    const [a, b] = range === "*" ? [lo, Infinity] : range.split("-").map(Number);
    const end = b === undefined ? (step ? Infinity : a) : b;
    return v >= a && v <= end && (v - a) % (Number(step) || 1) === 0;
  });
  const t = new Date(from.getTime());
  t.setUTCSeconds(0, 0);
  for (let i = 0; i < 60 * 24 * 8; i++) {
    t.setUTCMinutes(t.getUTCMinutes() + 1);
    if (matches(min, t.getUTCMinutes(), 0) && matches(hour, t.getUTCHours(), 0) && matches(dom, t.getUTCDate(), 1) &&
        matches(mon, t.getUTCMonth() + 1, 1) && matches(dow, t.getUTCDay(), 0)) return t;
  }
  return null;
}

function render(s) {
  const counts = { fresh: 0, stale: 0, expired: 0, missing: 0 };
  for (const g of s.gateways) counts[g.state] = (counts[g.state] ?? 0) + 1;
  $("summary").innerHTML = Object.entries(counts).map(([k, n]) =>
    `<span class="pill ${k}" data-testid="summary-${k}"><span class="dot"></span>${n} ${k}</span>`).join("");
  $("gateways").innerHTML = s.gateways.map(gatewayRow).join("");

  const m = s.merged;
  const missing = m.missing_gateways ?? [];
  $("merged").innerHTML =
    `<dt>State</dt><dd>${stateLabel(m)}</dd><dt>Models</dt><dd data-testid="merged-models">${num(m.models)}</dd>` +
    `<dt>Age</dt><dd>${m.age_seconds == null ? "—" : ago(m.age_seconds)}</dd>` +
    `<dt>Missing</dt><dd data-testid="merged-missing">${missing.length ? missing.map(esc).join(", ") : "none"}</dd>` +
    `<dt>Carried</dt><dd data-testid="merged-carried">${(m.carried ?? []).length ? m.carried.map((c) => `${esc(c.gateway)} (${ago(c.age_seconds)} old, until ${esc(new Date(c.until).toLocaleString())})`).join(", ") : "none"}</dd>` +
    planNote(s.cadence_plan);

  const c = s.metrics?.models ?? {};
  const reads = (c.fresh_hits ?? 0) + (c.stale_hits ?? 0) + (c.misses ?? 0) + (c.errors ?? 0);
  const revals = c.revalidations_started ?? 0;
  $("metrics").innerHTML = rate("Hit rate", c.hit_rate) + rate("Fresh rate", c.fresh_rate) +
    `<div class="muted gap">${num(reads)} reads</div>` +
    meter("Fresh hits", c.fresh_hits ?? 0, reads) + meter("Stale hits", c.stale_hits ?? 0, reads, "warn") +
    meter("Misses", c.misses ?? 0, reads, "warn") + meter("Errors", c.errors ?? 0, reads, "bad") +
    meter("Fail-safe serves", c.fail_safe_serves ?? 0, reads, "warn") +
    `<div class="muted gap">${num(revals)} revalidations</div>` +
    meter("Succeeded", c.revalidations_succeeded ?? 0, revals) + meter("Failed", c.revalidations_failed ?? 0, revals, "bad") +
    meter("Throttled", c.revalidations_throttled ?? 0, Math.max(revals, c.revalidations_throttled ?? 0), "warn");

  const r = s.last_run;
  const next = nextCron(cron);
  const nextText = next ? `${next.toISOString().slice(0, 16).replace("T", " ")} UTC (in ${ago((next - Date.now()) / 1000)})` : "—";
  $("run").innerHTML = r
    ? `<dt>Result</dt><dd data-testid="run-result">${r.success ? "all stored" : `${r.gateways_failed} of ${r.details.length} failed`}</dd>` +
      `<dt>Trigger</dt><dd>${esc(r.trigger)}</dd><dt>Started</dt><dd>${esc(new Date(r.started_at).toLocaleString())} (${ago(since(r.started_at))} ago)</dd>` +
      `<dt>Duration</dt><dd>${(r.duration_ms / 1000).toFixed(1)} s</dd><dt>Next cron</dt><dd>${esc(nextText)}</dd>`
    : `<dt>Result</dt><dd data-testid="run-result">no warm recorded</dd><dt>Next cron</dt><dd>${esc(nextText)}</dd>`;
  $("run-details").innerHTML = (r?.details ?? []).map((d) =>
    `<tr><td><span class="dot ${d.status === "success" ? "fresh" : d.status === "not_due" ? "missing" : "expired"}"></span> ${esc(d.gateway)}</td>` +
    `<td class="num">${num(d.count)}</td><td class="num">${(d.duration_ms / 1000).toFixed(2)} s</td>` +
    `<td class="err">${esc(d.error ?? (d.status === "not_due" ? `not due until ${new Date(d.next_due_at).toLocaleString()}` : ""))}</td></tr>`).join("");
  place(document);
}

// Widths and positions from data attributes, through the CSSOM (the CSP allows no
// style attributes): data-width / data-left are percentages; data-shift centres a
// 2-pixel marker on its position.
function place(root) {
  for (const el of root.querySelectorAll("[data-width]")) el.style.width = `${Number(el.dataset.width)}%`;
  for (const el of root.querySelectorAll("[data-left]")) {
    el.style.left = el.dataset.shift ? `calc(${Number(el.dataset.left)}% - 1px)` : `${Number(el.dataset.left)}%`;
  }
}

let lastGood = null;
async function refresh() {
  const started = new Date();
  try {
    const res = await fetch(`${apiBase}/api/cache/warm-models`, { headers: { Accept: "application/json" } });
    const body = await res.json().catch(() => null);
    if (!res.ok || !body?.gateways) throw new Error(`status endpoint answered ${res.status}${body?.message ? `: ${body.message}` : ""}`);
    render(body);
    lastGood = started;
    $("banner").className = "";
    $("loaded").textContent = `updated ${started.toLocaleTimeString()} · every 30 s`;
  } catch (e) {
    const what = e instanceof TypeError ? "status endpoint unreachable" : e.message;
    $("banner").textContent = `Could not refresh (${what}).` + (lastGood ? ` Showing data from ${lastGood.toLocaleTimeString()}.` : "");
    $("banner").className = "shown";
    $("loaded").textContent = lastGood ? `last good ${lastGood.toLocaleTimeString()}` : "no data";
  }
  performance.mark("status-rendered");
  document.body.dataset.ready = "1";
}
refresh();
setInterval(refresh, REFRESH_MS);
