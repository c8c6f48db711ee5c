#!/bin/sh
# Installs Debian's chromium when it is missing, for the test that renders `mailbot report --html` headless
# and checks the screenshot (the browser only reads a local file; it is never started as a service).
set -eu
# A Chinese font too: the zh-CN report would otherwise render as empty boxes (fc-list knows none).
if command -v chromium >/dev/null 2>&1 && fc-list :lang=zh 2>/dev/null | grep -q .; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "ensure-chromium: chromium is missing and I cannot install it (not root, no sudo)" >&2; exit 1
fi
echo "ensure-chromium: installing chromium and a Chinese font from Debian's packages" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# --no-install-recommends: a headless screenshot needs the browser and one font per script, not the
# desktop integration the recommends pull in.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-wqy-zenhei >/dev/null
