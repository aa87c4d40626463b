#!/usr/bin/env bash
# Runs BenchmarkThousandUploadsInFlight (internal/clustertest: two Caddy
# processes, 1,000 uploads of 256 KiB in flight, tracker in memory and
# through a redis-server) as N pairs, one after the other, and prints
# each pair's figures, the ratio of Redis-backed to in-memory req/s per
# pair, and the median of those ratios:
#   scripts/cluster-bench.sh [pairs] [uploads per run]
# Defaults: 5 pairs of 8,000 uploads (about 10 s a run). On a machine
# shared with other work one pair says little: run it quiet, and read
# the median.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs="${1:-5}"
uploads="${2:-8000}"
bin="$(mktemp -d)/clustertest.test"
go test -c -o "$bin" ./internal/clustertest
cd internal/clustertest
ratios=()
for i in $(seq "$pairs"); do
	out="$("$bin" -test.run '^$' -test.bench ThousandUploadsInFlight -test.benchtime "${uploads}x" -test.count 1 2>&1 | grep '^BenchmarkThousandUploadsInFlight')"
	echo "$out"
	mem="$(echo "$out" | awk '/memory/ {for (i = 1; i < NF; i++) if ($(i+1) == "req/s") print $i}')"
	red="$(echo "$out" | awk '/redis/ {for (i = 1; i < NF; i++) if ($(i+1) == "req/s") print $i}')"
	ratio="$(awk -v r="$red" -v m="$mem" 'BEGIN {printf "%.3f", r / m}')"
	echo "pair $i: in memory $mem req/s, through Redis $red req/s: $ratio"
	ratios+=("$ratio")
done
median="$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')"
echo "ratios: ${ratios[*]}; median $median"
