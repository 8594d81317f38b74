#!/usr/bin/env bash
# Draws the pictures in docs/ that BENCHMARKS.md shows: `cloudkon report --plot` of a local
# run and of a remote run on a moto server this script starts (never AWS).
#
#   benchmarks/tools/make_plots.sh [OUT_DIR]      (default: docs/)
#
# Needs the project's .venv (./scripts/test or ./scripts/cloudkon makes it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$(realpath -m "${1:-$root/docs}")"
py="$root/.venv/bin/python"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # cloudkon and the benchmarks package
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$out"

# A mixed workload: 2,000 lines of sleeps (0-20 ms) and shell commands.
mixed="$("$py" -c 'import sys, pathlib; from benchmarks import workloads as w
print(w.write(w.MIXED, 2000, pathlib.Path(sys.argv[1])).path)' "$work")"

echo "local: cloudkon run mixed-2000.txt --workers 4" >&2
"$py" -m cloudkon run "$mixed" --workers 4 --job-id local-mixed \
    --output "$work/local.jsonl" > /dev/null
(cd "$work" && "$py" -m cloudkon report local.jsonl --plot "$out/report-local.png")

echo "remote: 2 workers x 2 threads on a moto server" >&2
port="$("$py" -c 'from benchmarks.moto_server import free_port; print(free_port())')"
"$py" -m benchmarks.moto_server --port "$port" > "$work/moto.log" 2>&1 &
pids+=("$!")
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=testing \
    AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_REGION
for _ in $(seq 100); do
    curl -sf "$AWS_ENDPOINT_URL/_cloudkon/requests" > /dev/null && break
    sleep 0.1
done
"$py" -m cloudkon setup --prefix plots --bucket-suffix plots > /dev/null
for i in 1 2; do
    "$py" -m cloudkon worker --prefix plots --no-create --threads 2 --wait-seconds 1 \
        --worker-id "worker-$i" 2> "$work/worker-$i.log" &
    pids+=("$!")
done
"$py" -m cloudkon submit "$mixed" --prefix plots --direct --wait --job-id remote-mixed \
    --output "$work/remote.jsonl" > /dev/null
(cd "$work" && "$py" -m cloudkon report remote.jsonl --plot "$out/report-remote.png")
