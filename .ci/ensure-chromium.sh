#!/usr/bin/env bash
# The web UI's browser tests (tests/test_ui_browser.py) drive Debian's chromium through
# Playwright's driver; Playwright never downloads a browser here.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
