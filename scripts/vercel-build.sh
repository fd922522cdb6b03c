#!/usr/bin/env bash
# Build the deployment offline with Vercel's own CLI, the way Vercel's build machines do,
# then check the Build Output (.vercel/output) the platform would deploy.
#
# - The CLI comes from the npm registry, pinned: newer majors do not install here.
# - VERCEL_BUILD_IMAGE=1 is what Vercel's build machines set: the Rust builder then runs
#   plain `cargo build --release --bin <name>` (without it, it cross-compiles with
#   cargo-zigbuild).
# - No account or network beyond the registries: a throwaway .vercel/project.json
#   (framework null) stands in for `vercel link`; a linked project's file is restored.
set -euo pipefail
cd "$(dirname "$0")/.."

VERCEL_CLI_VERSION=58.10.0
cli_dir=target/vercel-cli
cli=$cli_dir/node_modules/.bin/vercel

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "[vercel-build] installing nodejs and npm from Debian's packages"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
installed=$(node -p "try{require('./$cli_dir/node_modules/vercel/package.json').version}catch(e){''}")
if [ "$installed" != "$VERCEL_CLI_VERSION" ]; then
  echo "[vercel-build] installing vercel@$VERCEL_CLI_VERSION from the npm registry"
  mkdir -p "$cli_dir"
  npm install --prefix "$cli_dir" --no-audit --no-fund --loglevel=error "vercel@$VERCEL_CLI_VERSION" >/dev/null
fi

mkdir -p .vercel
linked=""
if [ -f .vercel/project.json ] && ! grep -q '"prj_local"' .vercel/project.json; then
  linked=$(mktemp)
  cp .vercel/project.json "$linked"
fi
restore() { if [ -n "$linked" ]; then mv "$linked" .vercel/project.json; fi; }
trap restore EXIT
echo '{"projectId":"prj_local","orgId":"team_local","settings":{"framework":null}}' > .vercel/project.json
rm -rf .vercel/output

echo "[vercel-build] vercel build (VERCEL_BUILD_IMAGE=1: cargo build --release per function)"
VERCEL_BUILD_IMAGE=1 VERCEL_TELEMETRY_DISABLED=1 NO_UPDATE_NOTIFIER=1 "$cli" build --yes
node scripts/check-vercel-output.mjs
