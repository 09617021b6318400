#!/usr/bin/env bash
# staticcheck.sh installs staticcheck (honnef.co/go/tools, the version
# pinned below) into ${TOOLS_DIR:-$HOME/.cache/remora/tools}/bin when it is
# missing, from the Go module proxy, and prints its path.
set -euo pipefail
version=v0.8.2
tools_dir=${TOOLS_DIR:-$HOME/.cache/remora/tools}
bin=$tools_dir/staticcheck-$version/staticcheck
if [ ! -x "$bin" ]; then
	echo "staticcheck.sh: installing staticcheck $version" >&2
	GOBIN=$(dirname "$bin") "${GO:-go}" install "honnef.co/go/tools/cmd/staticcheck@$version" >&2
fi
echo "$bin"
