#!/usr/bin/env bash
# debian-package.sh PACKAGE BINARY [PATH...] makes sure BINARY, from
# Debian's PACKAGE, is installed, and prints its path on stdout: the first
# of `command -v BINARY` and the PATHs given that is executable. When none
# is, it installs PACKAGE with apt-get (no recommended packages), which
# needs root or passwordless sudo. Nothing is downloaded from anywhere
# else. chromium.sh and dnsmasq.sh are this for their tools.
set -euo pipefail

die() { echo "debian-package.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: debian-package.sh PACKAGE BINARY [PATH...]"
pkg=$1 name=$2
shift 2

find_bin() {
	for b in "$(command -v "$name" 2>/dev/null || true)" "$@"; do
		if [ -n "$b" ] && [ -x "$b" ]; then
			echo "$b"
			return 0
		fi
	done
	return 1
}

if bin=$(find_bin "$@"); then
	echo "$bin"
	exit 0
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install $pkg"
	SUDO=(sudo -n)
fi
echo "debian-package.sh: installing $pkg from Debian packages" >&2
apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
"${apt[@]}" update >&2
"${apt[@]}" install -y --no-install-recommends "$pkg" >&2
bin=$(find_bin "$@") || die "$pkg is installed but no $name binary was found"
echo "$bin"
