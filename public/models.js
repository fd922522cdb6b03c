// The models page's script. The document already holds the first screen of rows
// (rendered by the page route, crates/cache-core/src/page.rs); this adds the rest on
// demand from /api/models: further pages as you scroll, the server's search (debounced,
// the request in flight cancelled), and the gateway filter. Without it, the document's
// links and form do the same through the page route.
"use strict";
(() => {
  const PAGE = 100;
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const apiBase = window.gatewayzApiBase; // public/api-base.js

  // Catalog strings are data: a field of another type renders as nothing.
  const str = (v) => (typeof v === "string" ? v : typeof v === "number" ? String(v) : "");
  const esc = (s) => str(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const num = (v) => {
    const n = typeof v === "string" || typeof v === "number" ? Number(v) : NaN;
    return Number.isFinite(n) ? n : null;
  };
  const perMillion = (p) => {
    const n = num(p);
    if (n == null || n < 0) return "—";
    const v = n * 1e6;
    return "$" + (v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(2) : v.toPrecision(2));
  };
  const context = (c) => { const n = num(c); return n > 0 ? Math.floor(n).toLocaleString("en-US") : "—"; };
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

  // The cheapest gateway's price (by prompt) from gateway_pricing, else the record's own.
  function cheapest(m) {
    let best = null;
    const prices = isObject(m.gateway_pricing) ? m.gateway_pricing : {};
    for (const [gw, p] of Object.entries(prices)) {
      const n = isObject(p) ? num(p.prompt) : null;
      if (n == null) continue;
      if (!best || n < best.n) best = { gw, p, n };
    }
    return best ?? (isObject(m.pricing) ? { gw: str(m.source_gateway), p: m.pricing } : null);
  }

  function row(m) {
    if (!isObject(m)) return "";
    const gateways = (Array.isArray(m.source_gateways) ? m.source_gateways : [m.source_gateway]).map(str).filter(Boolean);
    const price = cheapest(m);
    const via = price && gateways.length > 1 ? ` title="cheapest: ${esc(price.gw)}" data-gateway="${esc(price.gw)}"` : "";
    const name = str(m.name) || str(m.id);
    return `<tr data-testid="model-row"><td><div>${esc(name)}</div><div class="id">${esc(m.id)}</div></td>` +
      `<td>${esc(m.provider_slug)}</td>` +
      `<td>${gateways.map((g) => `<span class="tag">${esc(g)}</span>`).join("")}</td>` +
      `<td class="num">${context(m.context_length)}</td>` +
      `<td class="num" data-testid="prompt-price"${via}>${perMillion(price?.p?.prompt)}</td>` +
      `<td class="num" data-testid="completion-price">${perMillion(price?.p?.completion)}</td></tr>`;
  }

  // What is on screen: the document's rows to start with.
  const state = {
    gateway: body.dataset.gateway || "",
    search: body.dataset.search || "",
    next: Number(body.dataset.offset) + $("rows").rows.length,
    matching: Number(body.dataset.matching),
    total: Number(body.dataset.total),
    loading: null,
  };

  function showCount() {
    $("count").textContent = `${state.matching.toLocaleString("en-US")} of ${state.total.toLocaleString("en-US")} models`;
    $("count").dataset.count = state.matching;
  }

  function showAge(fetchedAt) {
    const at = Number(fetchedAt);
    if (!at) return;
    const minutes = Math.max(0, Math.round((Date.now() - at) / 60000));
    $("cache").textContent = `data ${minutes < 1 ? "just now" : minutes + " min old"}`;
  }

  function setStatus(text, error = false) {
    $("status").textContent = text;
    $("status").className = error ? "error" : "";
  }

  // One page of the current view from the JSON API; a newer request cancels it.
  async function load(offset, replace) {
    state.loading?.abort();
    const ctl = new AbortController();
    state.loading = ctl;
    const q = new URLSearchParams({ gateway: state.gateway || "all", limit: String(PAGE), offset: String(offset) });
    if (state.search) q.set("search", state.search);
    let grew = false;
    try {
      const res = await fetch(`${apiBase}/api/models?${q}`, { headers: { Accept: "application/json" }, signal: ctl.signal });
      const data = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(`Models unavailable (${res.status}): ${str(data.message) || res.statusText}`);
      const rows = Array.isArray(data.data) ? data.data : [];
      const html = rows.map(row).join("");
      if (replace) $("rows").innerHTML = html; else $("rows").insertAdjacentHTML("beforeend", html);
      state.next = offset + rows.length;
      grew = rows.length > 0;
      state.matching = Number(data.total) || 0;
      if (!state.gateway && !state.search) state.total = state.matching;
      showCount();
      setStatus(state.matching ? "" : "No model matches.");
      if (res.headers.get("X-Cache-Age") != null) showAge(Date.now() - Number(res.headers.get("X-Cache-Age")) * 1000);
    } catch (e) {
      if (e.name !== "AbortError") setStatus(e.message || "Could not reach the models API.", true);
    } finally {
      if (state.loading === ctl) {
        state.loading = null;
        // An observer reports only when the end marker *enters* the margin. Still near
        // it after this page (a tall screen; a scroll in the same frame as the new
        // rows), it would never report again: observing anew reports the marker's state
        // at the next frame. Only after a page that added rows: an error or an empty
        // page waits for the user's next scroll.
        if (grew) {
          endObserver.unobserve($("more"));
          endObserver.observe($("more"));
        }
      }
    }
  }

  // Near the end of the list (within 800 px of view): the next page, if there is one.
  const endObserver = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && !state.loading && state.next < state.matching) load(state.next, false);
  }, { rootMargin: "800px" });

  // The view changed (search, gateway): its first page replaces the rows.
  function refilter() {
    const term = $("search").value.trim();
    state.search = term.length >= 2 ? term : "";
    state.gateway = $("gateway").value;
    const q = new URLSearchParams();
    if (state.gateway) q.set("gateway", state.gateway);
    if (state.search) q.set("search", state.search);
    history.replaceState(null, "", q.toString() ? `?${q}` : location.pathname);
    window.scrollTo(0, 0);
    load(0, true);
  }

  body.classList.add("js");
  showAge(body.dataset.fetchedAt);
  let t;
  $("search").addEventListener("input", () => { clearTimeout(t); t = setTimeout(refilter, 200); });
  $("gateway").addEventListener("change", refilter);
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(t); refilter(); });
  // Scrolling near the end loads the next page, while there is one.
  endObserver.observe($("more"));
  body.dataset.ready = "1";
})();
