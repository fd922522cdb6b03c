// Where the pages' JSON comes from, for models.js and status.js (loaded before each):
// <meta name="gatewayz-api-base"> (empty = same origin). ?api= overrides it only on
// localhost or for an origin listed in <meta name="gatewayz-api-allow">: a link to a
// page must never make it render another server's rows ("GPT-4o FREE, send your key
// to ..."). One copy of this rule for both pages.
"use strict";
window.gatewayzApiBase = (() => {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
  const requested = new URLSearchParams(location.search).get("api");
  if (requested) {
    const local = ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
    let origin = null;
    try { origin = new URL(requested).origin; } catch (e) { origin = null; }
    const allowed = meta("gatewayz-api-allow").split(/[\s,]+/).filter(Boolean);
    if (origin && (local || allowed.includes(origin))) return requested;
  }
  return meta("gatewayz-api-base");
})();
