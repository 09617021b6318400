#!/usr/bin/env bash
# consul-agent.sh builds the Consul agent that the discovery/consul tests run
# against and prints the binary's path on stdout (build output goes to stderr).
#
# The version is the one pinned in tools/consul/go.mod (a separate module, so
# the agent's dependencies stay out of Remora's go.mod). The binary lands in
#   ${TOOLS_DIR:-$HOME/.cache/remora/tools}/consul-<version>/consul
# and is built only if it is missing or does not run, so a second call returns
# at once. Concurrent calls serialise on a lock file. Any failure exits non-zero
# with a message on stderr.
#
# The cold build downloads Consul's module graph and compiles it: several
# minutes on two cores. It needs only the Go module proxy.
set -euo pipefail

die() { echo "consul-agent.sh: $*" >&2; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
moddir=$root/tools/consul
[ -f "$moddir/go.mod" ] || die "missing $moddir/go.mod (the wrapper module that pins the Consul version)"
command -v go >/dev/null || die "go is not on PATH; it is needed to build the Consul agent"

version=$(awk '$1 == "github.com/hashicorp/consul" { print $2; exit }' "$moddir/go.mod")
[ -n "$version" ] || die "no github.com/hashicorp/consul requirement in $moddir/go.mod"

tools_dir=${TOOLS_DIR:-$HOME/.cache/remora/tools}
dir=$tools_dir/consul-$version
bin=$dir/consul

# works: the binary exists and reports the pinned version. (Not a pipe into
# grep -q: with pipefail, consul's SIGPIPE after an early match reads as a
# failure.)
works() {
	local out
	[ -x "$bin" ] && out=$("$bin" version 2>/dev/null) || return 1
	[[ $out == "Consul ${version}"$'\n'* || $out == "Consul ${version}" ]]
}

if works; then
	echo "$bin"
	exit 0
fi

mkdir -p "$dir" || die "cannot create $dir"
exec 9>"$dir/.lock" || die "cannot open $dir/.lock"
flock 9 || die "cannot lock $dir/.lock"
if works; then # another process built it while we waited
	echo "$bin"
	exit 0
fi

echo "consul-agent.sh: building Consul $version into $dir (takes minutes the first time)" >&2
start=$(date +%s)
tmp=$(mktemp "$dir/consul.XXXXXX")
trap 'rm -f "$tmp"' EXIT
(
	cd "$moddir"
	GOWORK=off CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
		go build -trimpath -ldflags '-s -w' -o "$tmp" github.com/hashicorp/consul
) >&2 || die "go build of github.com/hashicorp/consul@$version failed (see above)"
chmod +x "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
works || die "built $bin but '$bin version' does not report Consul $version"
echo "consul-agent.sh: built Consul $version in $(($(date +%s) - start))s" >&2
echo "$bin"
