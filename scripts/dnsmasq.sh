#!/usr/bin/env bash
# dnsmasq.sh makes sure dnsmasq, the DNS server the discovery/dns tests run
# against, is installed, and prints its path on stdout. It comes from
# Debian's dnsmasq-base package (the server alone, no system service),
# installed with apt-get when missing; that needs root or passwordless sudo.
set -euo pipefail

die() { echo "dnsmasq.sh: $*" >&2; exit 1; }

find_bin() {
	for b in "$(command -v dnsmasq 2>/dev/null || true)" /usr/sbin/dnsmasq /sbin/dnsmasq; do
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
	command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install dnsmasq-base"
	SUDO=(sudo -n)
fi
echo "dnsmasq.sh: installing dnsmasq-base from Debian packages" >&2
apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
"${apt[@]}" update >&2
"${apt[@]}" install -y --no-install-recommends dnsmasq-base >&2
bin=$(find_bin) || die "dnsmasq-base is installed but no dnsmasq binary was found"
echo "$bin"
