#!/usr/bin/env bash
# Reproduce the README's results section on this machine (CPU is fine):
#   1. start `rkdsc up` (default ports) and a local Prometheus scraping it (1-2 s interval),
#   2. run `rkdsc demo` with the fixed policy (L = l_max) and with the adaptive policy,
#   3. plot accuracy-vs-SNR and latency panels from Prometheus' data,
#   4. stop everything.
# Needs: RKDSC_DATA_DIR (CIFAR-10), Debian's `prometheus` (for step 3; skipped without it).
#   scripts/measure_readme.sh [OUT_DIR]        (default docs/results)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/results}"
images="${IMAGES:-500}"
target="${TARGET_ACCURACY:-0.8}"
snrs="${SNRS:--4,0,4,8,12,16,20}"
bin="${VENV:-.venv}/bin"
: "${RKDSC_DATA_DIR:?set RKDSC_DATA_DIR to the CIFAR-10 source}"
mkdir -p "$out"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

export RKDSC_TOKEN="${RKDSC_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')}"
export OMP_NUM_THREADS=1 RKDSC_TRANSMITTER_TORCH_THREADS=1 RKDSC_RECEIVER_TORCH_THREADS=1
"$bin/rkdsc" up --run-dir "$work/stack" ${WEIGHTS:+--weights "$WEIGHTS"} > "$work/up.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do  # this stack's readiness: not another one that holds port 8000
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/up.log"; exit 1; }
  curl -sf -m 2 localhost:8000/readyz >/dev/null 2>&1 && break
  sleep 1
done
curl -sf -m 2 localhost:8000/readyz >/dev/null || { cat "$work/up.log"; exit 1; }

if command -v prometheus >/dev/null 2>&1; then
  prometheus --config.file=deploy/prometheus/prometheus.local.yml \
    --storage.tsdb.path="$work/tsdb" --web.listen-address=127.0.0.1:9090 \
    > "$work/prometheus.log" 2>&1 &
  pids+=($!)
fi
start=$(date +%s)

"$bin/rkdsc" demo --control-url http://127.0.0.1:8000 --token "$RKDSC_TOKEN" \
  --snr-db="$snrs" --images "$images" --policy fixed --out "$out/fixed" --json > "$out/fixed.json"
"$bin/rkdsc" demo --control-url http://127.0.0.1:8000 --token "$RKDSC_TOKEN" \
  --snr-db="$snrs" --images "$images" --policy adaptive --target-accuracy "$target" \
  --out "$out/adaptive" --json > "$out/adaptive.json"

if command -v prometheus >/dev/null 2>&1; then
  sleep 5  # a last scrape
  "$bin/python" scripts/plot_prometheus.py --url http://127.0.0.1:9090 \
    --start "$start" --out "$out/prometheus"
fi
"$bin/python" -c 'import json; from rkdsc_core.checkpoint import machine_info
print(json.dumps(machine_info(), indent=2))' > "$out/machine.json"  # CPU model, cores, versions
echo "wrote $out"
