#!/usr/bin/env bash
# polaris-server.sh builds the Polaris server that the discovery/nacos tests
# run against (Polaris serves the Nacos v1 HTTP and v2 gRPC client APIs) and
# prints the binary's path on stdout (build output goes to stderr).
#
# The version is the one pinned in tools/polaris/go.mod (a separate module, so
# the server's dependencies stay out of Remora's go.mod). The result lands in
#   ${TOOLS_DIR:-$HOME/.cache/remora/tools}/polaris-<version>/polaris-server
# with Polaris' default configuration (release/conf of the module) beside it
# in conf/, which the tests copy and adapt. It is built only if it is missing
# or does not report the pinned version, so a second call returns at once.
# Concurrent calls serialise on a lock file. Any failure exits non-zero with a
# message on stderr.
#
# The cold build downloads Polaris' module graph and compiles it: a few
# minutes on two cores. It needs only the Go module proxy.
set -euo pipefail

die() { echo "polaris-server.sh: $*" >&2; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
moddir=$root/tools/polaris
module=github.com/polarismesh/polaris
[ -f "$moddir/go.mod" ] || die "missing $moddir/go.mod (the wrapper module that pins the Polaris version)"
command -v go >/dev/null || die "go is not on PATH; it is needed to build the Polaris server"

version=$(awk -v m="$module" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$moddir/go.mod")
[ -n "$version" ] || die "no $module requirement in $moddir/go.mod"

tools_dir=${TOOLS_DIR:-$HOME/.cache/remora/tools}
dir=$tools_dir/polaris-$version
bin=$dir/polaris-server

# works: the binary reports the pinned version (set at build time with
# -ldflags -X) and the default configuration is in place.
works() {
	local out
	[ -x "$bin" ] && [ -f "$dir/conf/polaris-server.yaml" ] || return 1
	out=$("$bin" version 2>/dev/null) || return 1
	[[ $out == *"version: ${version}"* ]]
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

echo "polaris-server.sh: building Polaris $version into $dir (takes minutes the first time)" >&2
start=$(date +%s)
tmp=$(mktemp "$dir/polaris-server.XXXXXX")
tmpconf=$(mktemp -d "$dir/conf.XXXXXX")
trap 'rm -rf "$tmp" "$tmpconf"' EXIT
(
	cd "$moddir"
	GOWORK=off CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
		go build -trimpath -ldflags "-s -w -X $module/common/version.Version=$version" -o "$tmp" "$module"
) >&2 || die "go build of $module@$version failed (see above)"
src=$(cd "$moddir" && GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=readonly" go list -m -f '{{.Dir}}' "$module") ||
	die "cannot find the source of $module@$version in the module cache"
[ -f "$src/release/conf/polaris-server.yaml" ] || die "no release/conf/polaris-server.yaml in $src"
cp -R "$src/release/conf/." "$tmpconf/" || die "cannot copy $src/release/conf"
chmod -R u+w,go+rX "$tmpconf"
chmod +x "$tmp"
rm -rf "$dir/conf"
mv "$tmpconf" "$dir/conf"
mv -f "$tmp" "$bin"
trap - EXIT
works || die "built $bin but '$bin version' does not report $version"
echo "polaris-server.sh: built Polaris $version in $(($(date +%s) - start))s" >&2
echo "$bin"
