#!/usr/bin/env bash
# make bench: install what the benchmark needs (Debian packages only), build
# Remora and the bench driver into bin/, and run the driver. Everything the
# run writes goes to a temp dir that the driver removes; the driver stops
# every process it started. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing=()
have haproxy || missing+=(haproxy)
have nginx || missing+=(nginx-light)
have caddy || missing+=(caddy)
have wrk || missing+=(wrk)
have taskset || missing+=(util-linux)
have pgrep || missing+=(procps)

if ((${#missing[@]})); then
	echo "bench: installing ${missing[*]} from Debian packages" >&2
	SUDO=()
	if [ "$(id -u)" != 0 ]; then
		if command -v sudo >/dev/null 2>&1; then
			SUDO=(sudo -n)
		else
			echo "bench: need root (or sudo) to apt-get install ${missing[*]}" >&2
			exit 1
		fi
	fi
	# Remember daemons already running, so a package's own start (where its
	# postinst is allowed to start one) can be undone by pid below.
	pidfile_pid() { [ -r "$1" ] && tr -dc 0-9 <"$1" || true; }
	before_nginx=$(pidfile_pid /run/nginx.pid)
	before_haproxy=$(pidfile_pid /run/haproxy.pid)
	# Caddy's service (where systemd runs it) writes no pid file; it runs
	# as the user caddy, which the package creates.
	caddy_pids() { pgrep -x -u caddy caddy 2>/dev/null || true; }
	before_caddy=" $(caddy_pids | tr '\n' ' ') "
	apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
	"${apt[@]}" update
	if ! "${apt[@]}" install -y --no-install-recommends "${missing[@]}"; then
		# nginx-light is gone from newer releases: the plain package will do.
		missing=("${missing[@]/nginx-light/nginx}")
		"${apt[@]}" install -y --no-install-recommends "${missing[@]}"
	fi
	for f in /run/nginx.pid /run/haproxy.pid; do
		pid=$(pidfile_pid "$f")
		before=$before_nginx
		[ "$f" = /run/haproxy.pid ] && before=$before_haproxy
		if [ -n "$pid" ] && [ "$pid" != "$before" ] && kill -0 "$pid" 2>/dev/null; then
			echo "bench: stopping the service the package started (pid $pid)" >&2
			"${SUDO[@]}" kill "$pid" || true
		fi
	done
	for pid in $(caddy_pids); do
		if [[ $before_caddy != *" $pid "* ]]; then
			echo "bench: stopping the caddy service the package started (pid $pid)" >&2
			"${SUDO[@]}" kill "$pid" || true
		fi
	done
fi

mkdir -p bin
echo "bench: building bin/remora and bin/remora-bench" >&2
# Stamped as make build does, so the header names the commit measured.
"$GO" build -buildvcs=auto -ldflags "-X main.version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)" \
	-o bin/remora ./cmd/remora
"$GO" build -o bin/remora-bench ./bench

# 256 client connections plus the upstream pools need more than 1024 fds.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The driver starts every process in its own process group and stops them
# all when it ends or is signalled; this trap makes sure it is, and removes
# the temp dir even if the driver was killed.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/remora-bench-XXXXXX")
driver=""
cleanup() {
	if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
		kill -TERM "$driver" 2>/dev/null || true
		wait "$driver" 2>/dev/null || true
	fi
	if [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
bin/remora-bench -remora bin/remora -tmp "$tmp" "$@" &
driver=$!
rc=0
wait "$driver" || rc=$?
driver=""
exit "$rc"
