// Checks .vercel/output (Build Output API v3) against vercel.json: what the platform
// would deploy. Run by scripts/vercel-build.sh; exits 1 with every problem listed.
import { readFileSync, existsSync, statSync } from "node:fs";
import { join } from "node:path";

const out = ".vercel/output";
const vercelJson = JSON.parse(readFileSync("vercel.json", "utf8"));
const problems = [];
const readJson = (p) => {
  try {
    return JSON.parse(readFileSync(p, "utf8"));
  } catch (e) {
    problems.push(`${p}: ${e.message}`);
    return null;
  }
};

const expected = {
  "api/models.rs": "functions/api/models.func",
  "api/models/changes.rs": "functions/api/models/changes.func",
  "api/models/feed.rs": "functions/api/models/feed.func",
  "api/cache/warm-models.rs": "functions/api/cache/warm-models.func",
  "api/cron/warm-cache.rs": "functions/api/cron/warm-cache.func",
  "api/page.rs": "functions/api/page.func",
};
for (const [source, func] of Object.entries(expected)) {
  const vc = readJson(join(out, func, ".vc-config.json"));
  if (!vc) continue;
  const want = vercelJson.functions?.[source]?.maxDuration;
  if (vc.runtime !== "executable") problems.push(`${func}: runtime ${vc.runtime}, want executable`);
  if (vc.runtimeLanguage !== "rust") problems.push(`${func}: runtimeLanguage ${vc.runtimeLanguage}`);
  if (vc.supportsResponseStreaming !== true) problems.push(`${func}: no supportsResponseStreaming`);
  if (want === undefined || vc.maxDuration !== want) problems.push(`${func}: maxDuration ${vc.maxDuration}, vercel.json says ${want}`);
  // The executable is either in the .func directory or mapped to the build's output.
  const exe = vc.filePathMap?.[vc.handler] ?? join(out, func, vc.handler);
  if (!existsSync(exe)) problems.push(`${func}: executable ${exe} missing`);
  else if (!(statSync(exe).mode & 0o111)) problems.push(`${func}: ${exe} is not executable`);
}

const config = readJson(join(out, "config.json"));
if (config) {
  for (const cron of vercelJson.crons ?? []) {
    if (!config.crons?.some((c) => c.path === cron.path && c.schedule === cron.schedule))
      problems.push(`config.json: cron ${cron.path} ${cron.schedule} missing`);
  }
  if (!config.crons?.length) problems.push("config.json: no crons");
  for (const rewrite of vercelJson.rewrites ?? []) {
    if (!config.routes?.some((r) => r.src === `^${rewrite.source}$` && r.dest === rewrite.destination))
      problems.push(`config.json: route ${rewrite.source} -> ${rewrite.destination} missing`);
  }
  for (const path of ["^/$", "^/models$"]) {
    if (!config.routes?.some((r) => r.src === path && r.dest === "/api/page")) problems.push(`config.json: ${path} is not routed to the page function`);
  }
  const csp = config.routes?.find((r) => r.headers?.["Content-Security-Policy"])?.headers?.["Content-Security-Policy"] ?? "";
  if (!csp || !config.routes?.some((r) => r.headers?.["X-Content-Type-Options"] === "nosniff"))
    problems.push("config.json: no route sends the CSP and nosniff headers");
  const scriptSrc = csp.split(";").map((d) => d.trim()).find((d) => d.startsWith("script-src")) ?? "";
  if (scriptSrc !== "script-src 'self'") problems.push(`CSP ${scriptSrc}: want script-src 'self' (no inline script)`);
}
for (const file of ["status.html", "status.js", "status.css", "api-base.js", "models.js", "models.css"]) {
  if (!existsSync(join(out, "static", file))) problems.push(`static/${file} missing`);
}
// The filesystem answers before rewrites: a static file at / or /models would hide
// the page function.
for (const file of ["index.html", "models.html", "models"]) {
  if (existsSync(join(out, "static", file))) problems.push(`static/${file} would answer before the page function`);
}

if (problems.length) {
  console.error(`[vercel-build] Build Output check FAILED:\n  - ${problems.join("\n  - ")}`);
  process.exit(1);
}
console.log(`[vercel-build] Build Output OK: ${Object.keys(expected).length} functions, ${config.crons.length} cron(s), ${config.routes.length} routes, static pages present`);
