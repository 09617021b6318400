#!/usr/bin/env bash
# chromium.sh makes sure Chromium, the headless browser the admin UI's
# browser test drives, is installed, and prints its path on stdout. It
# comes from Debian's chromium package, installed with apt-get when
# missing; that needs root or passwordless sudo. The browser is never
# downloaded from anywhere else.
set -euo pipefail

die() { echo "chromium.sh: $*" >&2; exit 1; }

find_bin() {
	for b in "$(command -v chromium 2>/dev/null || true)" /usr/bin/chromium /usr/lib/chromium/chromium; do
		if [ -n "$b" ] && [ -x "$b" ]; then
			echo "$b"
			return 0
		fi
	done
	return 1
}

if bin=$(find_bin); then
	echo "$bin"
	exit 0
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install chromium"
	SUDO=(sudo -n)
fi
echo "chromium.sh: installing chromium from Debian packages" >&2
apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
"${apt[@]}" update >&2
"${apt[@]}" install -y --no-install-recommends chromium >&2
bin=$(find_bin) || die "chromium is installed but no chromium binary was found"
echo "$bin"
