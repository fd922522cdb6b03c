#!/usr/bin/env bash
# The project's test command. Works on a fresh Debian machine that has only the
# Rust toolchain: installs what the tests need (redis-server), then runs them all.
# Tests start their own redis-server processes on free loopback ports; nothing
# here touches a Redis on 6379.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "[test] installing from Debian's packages: ${need_apt[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "[test] browser test: runs (Chromium and ChromeDriver found)"
else
  echo "[test] browser test: SKIPPED - Chromium not installed (apt-get install chromium chromium-driver; CI installs them)"
fi

cargo test --workspace --locked "$@"
