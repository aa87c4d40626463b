#!/usr/bin/env bash
# Fuzz every target for N minutes each (default 1), one after the other:
#   scripts/fuzz.sh [minutes] [target regexp]
# A failing input is written by Go to the package's testdata/fuzz/<target>
# and stays there as a regression seed; this also copies the new corpus
# entries from Go's cache there, so plain `go test` runs them as seeds.
set -uo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-1}"
only="${2:-.}"
cache="$(go env GOCACHE)/fuzz"
failed=()
for pkg in ./caddyprogress; do
	module_path="$(go list "$pkg")"
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' | grep -E "$only"); do
		echo "== $pkg $target: ${minutes}m"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "${minutes}m" "$pkg"; then
			failed+=("$pkg $target")
		fi
		mkdir -p "$pkg/testdata/fuzz/$target"
		if [ -d "$cache/$module_path/$target" ]; then
			cp -n "$cache/$module_path/$target"/* "$pkg/testdata/fuzz/$target/" 2>/dev/null || true
		fi
		echo "   corpus: $(ls "$pkg/testdata/fuzz/$target" | wc -l) inputs"
	done
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "failed: ${failed[*]}"
	exit 1
fi
