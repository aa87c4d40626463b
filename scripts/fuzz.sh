#!/usr/bin/env bash
# Fuzz every target for N minutes each (default 1), one after the other:
#   scripts/fuzz.sh [minutes]
# New interesting inputs are kept in each package's testdata/fuzz/<target>
# (Go writes failing inputs there; this copies the new corpus entries from
# Go's cache, so they become seeds of the plain `go test` run).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-1}"
cache="$(go env GOCACHE)/fuzz"
for pkg in ./caddyprogress; do
	module_path="$(go list "$pkg")"
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
		echo "== $pkg $target: ${minutes}m"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "${minutes}m" "$pkg"
		mkdir -p "$pkg/testdata/fuzz/$target"
		if [ -d "$cache/$module_path/$target" ]; then
			cp -n "$cache/$module_path/$target"/* "$pkg/testdata/fuzz/$target/" 2>/dev/null || true
		fi
		echo "   corpus: $(ls "$pkg/testdata/fuzz/$target" | wc -l) inputs"
	done
done
