#!/usr/bin/env bash
# Install the headless browser of tests/report/test_report_browser.py when it is missing: Debian's chromium
# and chromium-driver packages (a browser build that downloads itself cannot work on an offline CI host).
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
if (have chromium || have chromium-browser) && (have chromedriver || [ -x /usr/lib/chromium/chromedriver ]); then
    echo "install-browser: chromium and chromedriver present"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    have sudo || { echo "install-browser: need root or sudo to apt-get install chromium chromium-driver" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium chromium-driver
chromium --version
chromedriver --version
