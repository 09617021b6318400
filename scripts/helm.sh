#!/usr/bin/env bash
# helm.sh builds the helm CLI that the deploy/ tests lint and render the
# chart deploy/helm/remora with, and prints the binary's path on stdout
# (build output goes to stderr).
#
# The version is the one pinned in tools/helm/go.mod (a separate module, so
# helm's dependencies stay out of Remora's go.mod). The binary lands in
#   ${TOOLS_DIR:-$HOME/.cache/remora/tools}/helm-<version>/helm
# and is built only if it is missing or does not report the pinned version,
# so a second call returns at once. The version is stamped through -ldflags
# (helm's source says only "v4.3"). Concurrent calls serialise on a lock
# file. Any failure exits non-zero with a message on stderr.
#
# The cold build downloads helm's module graph and compiles it: a few
# minutes on two cores. It needs only the Go module proxy.
set -euo pipefail

die() { echo "helm.sh: $*" >&2; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
moddir=$root/tools/helm
module=helm.sh/helm/v4
[ -f "$moddir/go.mod" ] || die "missing $moddir/go.mod (the wrapper module that pins the helm version)"
command -v go >/dev/null || die "go is not on PATH; it is needed to build helm"

version=$(awk -v m="$module" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$moddir/go.mod")
[ -n "$version" ] || die "no $module requirement in $moddir/go.mod"

tools_dir=${TOOLS_DIR:-$HOME/.cache/remora/tools}
dir=$tools_dir/helm-$version
bin=$dir/helm

# works: the binary reports the pinned version.
works() {
	local out
	[ -x "$bin" ] && out=$("$bin" version --short 2>/dev/null) || return 1
	[[ $out == "${version}" || $out == "${version}+"* ]]
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

echo "helm.sh: building helm $version into $dir (takes minutes the first time)" >&2
start=$(date +%s)
tmp=$(mktemp "$dir/helm.XXXXXX")
trap 'rm -f "$tmp"' EXIT
(
	cd "$moddir"
	GOWORK=off CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
		go build -trimpath -ldflags "-s -w -X $module/internal/version.version=$version -X $module/internal/version.gitTreeState=clean" \
		-o "$tmp" "$module/cmd/helm"
) >&2 || die "go build of $module/cmd/helm@$version failed (see above)"
chmod +x "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
works || die "built $bin but '$bin version --short' does not report $version"
echo "helm.sh: built helm $version in $(($(date +%s) - start))s" >&2
echo "$bin"
