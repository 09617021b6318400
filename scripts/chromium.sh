#!/usr/bin/env bash
# chromium.sh makes sure Chromium, the headless browser the admin UI's
# browser test drives, is installed, and prints its path on stdout. It
# comes from Debian's chromium package, installed with apt-get when
# missing; that needs root or passwordless sudo. The browser is never
# downloaded from anywhere else.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/debian-package.sh" chromium chromium /usr/bin/chromium /usr/lib/chromium/chromium
