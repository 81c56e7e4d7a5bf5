#!/usr/bin/env bash
# dashboard-check.sh - the admin dashboard rendered in headless Chromium, checked (DOM + screenshot).
# Installs Debian's chromium when missing and running as root; see scripts/dashboard_check.py.
# Usage: scripts/dashboard-check.sh [--keep] [--out dashboard.png]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "dashboard-check: installing chromium (Debian package)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -x "${MERIDIAN_BIN:-target/debug/meridian}" ]; then
    cargo build -q -p meridian
fi
exec python3 scripts/dashboard_check.py "$@"
