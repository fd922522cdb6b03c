// The models page's script. The document already holds the first screen of rows
// (rendered by the page route, crates/cache-core/src/page.rs); this adds the rest as the
// server renders them, by the same code (/models?fragment=rows): further pages as you
// scroll, the server's search (debounced, the request in flight cancelled), and the
// gateway and "new" filters. It only fetches, inserts and keeps its place. Without it, the
// document's links and form do the same through the page route.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const apiBase = window.gatewayzApiBase; // public/api-base.js

  // What is on screen: the document's rows to start with.
  const state = {
    gateway: body.dataset.gateway || "",
    search: body.dataset.search || "",
    fresh: body.dataset.new || "", // new=7d: models first seen within 7 days
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

  // The current view's rows from `offset` on, rendered by the server; a newer
  // request cancels it. The answer is a <tbody> whose data says the counts.
  async function load(offset, replace) {
    state.loading?.abort();
    const ctl = new AbortController();
    state.loading = ctl;
    const q = new URLSearchParams({ offset: String(offset), fragment: "rows" });
    if (state.gateway) q.set("gateway", state.gateway);
    if (state.search) q.set("search", state.search);
    if (state.fresh) q.set("new", state.fresh);
    let grew = false;
    try {
      const res = await fetch(`${apiBase}/models?${q}`, { signal: ctl.signal });
      if (!res.ok) {
        const error = await res.json().catch(() => ({}));
        const message = typeof error.message === "string" ? error.message : res.statusText;
        throw new Error(`Models unavailable (${res.status}): ${message}`);
      }
      const template = document.createElement("template");
      template.innerHTML = await res.text();
      const slice = template.content.firstElementChild;
      if (slice?.tagName !== "TBODY") throw new Error("Models unavailable: an unexpected answer.");
      const rows = [...slice.rows];
      if (replace) $("rows").replaceChildren(...rows); else $("rows").append(...rows);
      state.next = Number(slice.dataset.next) || offset + rows.length;
      grew = rows.length > 0;
      state.matching = Number(slice.dataset.matching) || 0;
      state.total = Number(slice.dataset.total) || state.total;
      showCount();
      setStatus(state.matching ? "" : "No model matches.");
      if (res.headers.get("X-Cache-Age") != null) showAge(Date.now() - Number(res.headers.get("X-Cache-Age")) * 1000);
    } catch (e) {
      if (e.name !== "AbortError") setStatus(e.message || "Could not reach the models page.", true);
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

  // The view changed (search, gateway, new): its first page replaces the rows.
  function refilter() {
    const term = $("search").value.trim();
    // Characters as the server counts them (code points): "👍" is one, not two
    // UTF-16 units, so a lone emoji is ignored here like any one-character term.
    state.search = [...term].length >= 2 ? term : "";
    state.gateway = $("gateway").value;
    state.fresh = $("new").checked ? $("new").value : "";
    const q = new URLSearchParams();
    if (state.gateway) q.set("gateway", state.gateway);
    if (state.search) q.set("search", state.search);
    if (state.fresh) q.set("new", state.fresh);
    history.replaceState(null, "", q.toString() ? `?${q}` : location.pathname);
    window.scrollTo(0, 0);
    load(0, true);
  }

  body.classList.add("js");
  showAge(body.dataset.fetchedAt);
  let t;
  $("search").addEventListener("input", () => { clearTimeout(t); t = setTimeout(refilter, 200); });
  $("gateway").addEventListener("change", refilter);
  $("new").addEventListener("change", refilter);
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(t); refilter(); });
  // Scrolling near the end loads the next page, while there is one.
  endObserver.observe($("more"));
  body.dataset.ready = "1";
})();
