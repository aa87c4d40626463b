#!/usr/bin/env bash
# Runs BenchmarkThousandUploadsInFlight (internal/clustertest: two pairs
# of Caddy processes side by side, one with the tracker in memory, one
# through a redis-server, taking turns in rounds of 1,000 uploads in
# flight) N times, and prints each run's figures, the ratio of
# Redis-backed to in-memory req/s of each run, and their median, and the
# same for the benchmark's estimate of that ratio had redis-server run on
# cores of its own:
#   scripts/cluster-bench.sh [runs] [uploads per run and variant]
# Defaults: 5 runs of 20,000 uploads (about a minute a run at 256 KiB).
# BENCH_UPLOAD_KIB sets the upload size (default 256), and
# BENCH_ROUND_UPLOADS the uploads per round (default 2,000).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
uploads="${2:-20000}"
bin="$(mktemp -d)/clustertest.test"
go test -c -o "$bin" ./internal/clustertest
cd internal/clustertest
ratios=()
estimates=()
for i in $(seq "$runs"); do
	out="$("$bin" -test.run '^$' -test.bench ThousandUploadsInFlight -test.benchtime "${uploads}x" -test.count 1 2>&1 | grep '^BenchmarkThousandUploadsInFlight')"
	echo "$out"
	ratio="$(echo "$out" | awk '{for (i = 1; i < NF; i++) if ($(i+1) == "redis/memory") print $i}')"
	estimate="$(echo "$out" | awk '{for (i = 1; i < NF; i++) if ($(i+1) == "est-redis/memory-redis-elsewhere") print $i}')"
	echo "run $i: through Redis $ratio of in memory (estimated with redis-server on other cores: $estimate)"
	ratios+=("$ratio")
	estimates+=("$estimate")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
echo "ratios: ${ratios[*]}; median $(median "${ratios[@]}")"
echo "estimates with redis-server on other cores: ${estimates[*]}; median $(median "${estimates[@]}")"
