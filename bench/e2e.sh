#!/usr/bin/env bash
# End-to-end benchmark: builds this project's caddy and runs the shared
# upload-proxy harness (../shared/bench: a sink backend, a load generator,
# plain Caddy reverse_proxy, nginx with its upload progress module) with
# this project as its "project" target, all measured in one run.
#
#   bench/e2e.sh                        # ROUNDS=3 NGINX_WORKERS=2, all scenarios
#   SCENARIOS=large ROUNDS=5 bench/e2e.sh
#
# Needs: apt-get install -y nginx libnginx-mod-http-uploadprogress wrk jq curl
# Every knob of the harness (see its README) passes through.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
harness="${BENCH_HARNESS:-$root/../shared/bench}"
[ -x "$harness/run.sh" ] || { echo "no harness at $harness (set BENCH_HARNESS)" >&2; exit 1; }

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
(cd "$root" && go build -o "$out/caddy" ./caddy-build)

# results and binaries go to a temp folder, never into the (shared) harness
work="${TMPDIR:-/tmp}/uploadbench-work"
export BENCH_BIN="${BENCH_BIN:-$work/bin}"
export BENCH_OUT="${BENCH_OUT:-$work/results/$(date +%Y%m%d-%H%M%S)}"
echo "results: $BENCH_OUT" >&2

cd "$harness"
PROJECT_CADDY="$out/caddy" \
PROJECT_CADDYFILE="${PROJECT_CADDYFILE:-$root/bench/project.Caddyfile}" \
PROJECT_PROGRESS_URL="${PROJECT_PROGRESS_URL:-http://127.0.0.1:19020/upload/status/{id}}" \
ROUNDS="${ROUNDS:-3}" NGINX_WORKERS="${NGINX_WORKERS:-2}" \
	./run.sh
