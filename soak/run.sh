#!/usr/bin/env bash
# The long soak and fault campaign (README: "Soak, faults and fuzzing"):
# 1,000 random uploads of up to 256 MiB, and every fault at full size
# (20,000 event streams, a 30 s reload storm, ...). Extra arguments go to
# go test, e.g. a seed to replay: soak/run.sh -soak.seed 42
set -euo pipefail
cd "$(dirname "$0")/.."
exec go test ./soak -count=1 -p 1 -v -timeout 2h -run . -soak.long "$@"
