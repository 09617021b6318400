#!/usr/bin/env bash
# kube-apiserver.sh builds the Kubernetes API server that the
# discovery/kubernetes and deploy tests run against and prints the binary's
# path on stdout (build output goes to stderr).
#
# The version is the one pinned in tools/kube-apiserver/go.mod (a separate
# module, so the server's dependencies stay out of Remora's go.mod; see the
# comment there on its replace lines). The binary lands in
#   ${TOOLS_DIR:-$HOME/.cache/remora/tools}/kube-apiserver-<version>/kube-apiserver
# and is built only if it is missing or does not report the pinned version,
# so a second call returns at once. The version is stamped through -ldflags
# (an unstamped build reports v0.0.0). Concurrent calls serialise on a lock
# file. Any failure exits non-zero with a message on stderr.
#
# The server needs an etcd (3.5 or newer) to store its objects: the tests
# start an embedded one (go.etcd.io/etcd/server/v3/embed), so no etcd binary
# is built here.
#
# The cold build downloads the module graph of k8s.io/kubernetes and
# compiles it: about 5 minutes on two cores. It needs only the Go module
# proxy.
set -euo pipefail

die() { echo "kube-apiserver.sh: $*" >&2; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
moddir=$root/tools/kube-apiserver
module=k8s.io/kubernetes
[ -f "$moddir/go.mod" ] || die "missing $moddir/go.mod (the wrapper module that pins the Kubernetes version)"
command -v go >/dev/null || die "go is not on PATH; it is needed to build kube-apiserver"

version=$(awk -v m="$module" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$moddir/go.mod")
[ -n "$version" ] || die "no $module requirement in $moddir/go.mod"
[[ $version =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || die "$module version $version is not vMAJOR.MINOR.PATCH"
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}

tools_dir=${TOOLS_DIR:-$HOME/.cache/remora/tools}
dir=$tools_dir/kube-apiserver-$version
bin=$dir/kube-apiserver

# works: the binary reports the pinned version ("Kubernetes v1.37.2").
works() {
	local out
	[ -x "$bin" ] && out=$("$bin" --version 2>/dev/null) || return 1
	[[ $out == "Kubernetes ${version}" ]]
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

echo "kube-apiserver.sh: building kube-apiserver $version into $dir (takes minutes the first time)" >&2
start=$(date +%s)
tmp=$(mktemp "$dir/kube-apiserver.XXXXXX")
trap 'rm -f "$tmp"' EXIT
v=k8s.io/component-base/version
ldflags="-s -w -X $v.gitVersion=$version -X $v.gitMajor=$major -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
(
	cd "$moddir"
	GOWORK=off CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
		go build -trimpath -ldflags "$ldflags" -o "$tmp" "$module/cmd/kube-apiserver"
) >&2 || die "go build of $module/cmd/kube-apiserver@$version failed (see above)"
chmod +x "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
works || die "built $bin but '$bin --version' does not report Kubernetes $version"
echo "kube-apiserver.sh: built kube-apiserver $version in $(($(date +%s) - start))s" >&2
echo "$bin"
