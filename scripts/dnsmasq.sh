#!/usr/bin/env bash
# dnsmasq.sh makes sure dnsmasq, the DNS server the discovery/dns tests run
# against, is installed, and prints its path on stdout. It comes from
# Debian's dnsmasq-base package (the server alone, no system service),
# installed with apt-get when missing; that needs root or passwordless sudo.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/debian-package.sh" dnsmasq-base dnsmasq /usr/sbin/dnsmasq /sbin/dnsmasq
