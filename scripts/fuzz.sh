#!/usr/bin/env bash
# Runs every fuzz target in the module for FUZZTIME each (default 30s; a
# count such as 500x keeps it short and immune to machine load). New
# findings land in the package's testdata/fuzz and become regression seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
# Targets that run whole exchanges through two proxies take a fraction of
# a second per execution: they get FUZZTIME_SLOW (default 30x) instead,
# and eight workers, since an execution mostly waits on timeouts.
slow_targets=" FuzzConnectionState "
fuzztime_slow=${FUZZTIME_SLOW:-30x}
go=${GO:-go}
status=0
while IFS= read -r line; do
  file=${line%%:*}
  name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/' <<<"${line#*:}")
  dir=./$(dirname "$file")
  t=$fuzztime
  workers=()
  if [[ $slow_targets == *" $name "* ]]; then
    t=$fuzztime_slow
    workers=(-parallel 8)
  fi
  echo "fuzz $dir $name ($t)"
  if ! "$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "${workers[@]}" "$dir" >/tmp/remora-fuzz.$$ 2>&1; then
    cat /tmp/remora-fuzz.$$
    status=1
  fi
done < <(git grep -n --no-color -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' -- '*_test.go' | sed -E 's/^([^:]*):[0-9]+:/\1:/')
rm -f /tmp/remora-fuzz.$$
exit $status
