#!/usr/bin/env bash
# Runs the cargo-fuzz targets (tests/fuzz/fuzz_targets/) on the nightly toolchain:
#   tests/fuzz/run.sh [RUNS] [TARGET...]      (default: 10,000,000 runs of every target)
# SYNAPSE_BIN=PATH uses that synapse binary to split the seed models instead of building one.
# SEEDS_OUT=DIR also keeps a copy of the seeds there (to fuzz the same binaries elsewhere).
# JOBS=N splits each target's runs over N fuzzing processes sharing its corpus (default 1); the
# executions reported are their sum.
# Seeds come from the project's own files (SYN1 golden frames, the synthetic fixtures split by
# `synapse split`, a few control messages); the corpus each run grows is merged, minimised, into
# tests/fixtures/fuzz/TARGET/ (committed), and any crash or timeout input is kept in
# tests/fixtures/fuzz/artifacts/TARGET/ as a reproducer (`cargo +nightly fuzz run --fuzz-dir
# tests/fuzz TARGET FILE` replays one). Exits non-zero if any target found a crash.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
runs="${1:-10000000}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(syn1_frame node_messages gguf shard manifest)
# The project's own build (for `synapse split`) and the fuzz build (nightly, sanitizers) live
# apart, both outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/synapse-build/target}"
fuzz_target_dir="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/synapse-build/fuzz}"
fuzz() { CARGO_TARGET_DIR="$fuzz_target_dir" cargo +nightly fuzz "$@"; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
synapse() {
  if [ -n "${SYNAPSE_BIN:-}" ]; then "$SYNAPSE_BIN" "$@"; else cargo run --quiet --release --bin synapse -- "$@"; fi
}
seeds="$(mktemp -d)"
jobs="${JOBS:-1}"
trap 'rm -rf "$seeds" /dev/shm/synapse-fuzz-* 2>/dev/null' EXIT

echo "== seeds"
mkdir -p "$seeds"/{syn1_frame,node_messages,gguf,shard,manifest}
cp tests/fixtures/syn1/*.bin "$seeds/syn1_frame/"
find tests/fixtures/syn1/corpus -name '*.bin' -exec cp {} "$seeds/syn1_frame/" \;
python3 tests/fixtures/make_fixtures.py "$seeds/fixtures" >/dev/null
cp "$seeds/fixtures/llama-gguf/model.gguf" "$seeds/gguf/"
synapse split "$seeds/fixtures/llama-gguf/model.gguf" --out "$seeds/split" --shards 2 >/dev/null
synapse split "$seeds/fixtures/llama-gguf/model.gguf" --out "$seeds/split-q4_1" --shards 2 \
  --weights q4_1 >/dev/null
for s in split split-q4_1; do
  for f in "$seeds/$s"/shard-*.safetensors; do cp "$f" "$seeds/shard/$s-$(basename "$f")"; done
  cp "$seeds/$s/manifest.json" "$seeds/manifest/$s.json"
done
export SYNAPSE_FUZZ_MANIFESTS="$seeds/split/manifest.json:$seeds/split-q4_1/manifest.json"
i=0
for m in \
  '{"type":"hello","version":1,"name":"laptop","kind":"native","backend":"cpu","adapter":"CPU (2 threads)","memory_bytes":4294967296,"gflops":6.5}' \
  '{"type":"shard_progress","shard":1,"fraction":0.5}' '{"type":"shard_ready","shard":0}' \
  '{"type":"shard_failed","shard":2,"error":"out of memory"}' '{"type":"step_failed","step":7,"error":"lost"}' \
  '{"type":"report","weights_bytes":1000,"kv_bytes":20,"gflops":3.5}' \
  '{"type":"load","shard":0,"url":"/shards/s.safetensors","sha256":"ab","bytes":10}' \
  '{"type":"step","step":1,"session":2,"pos":3,"first":0,"last":1,"output":{"kind":"hidden","encoding":"rice"}}' \
  '{"type":"unload","shard":1}' '{"type":"close","session":4}'; do
  i=$((i + 1)); printf '%s' "$m" > "$seeds/node_messages/seed-$i.json"
done
printf '{"type":"welcome","node_id":1,"manifest":%s}' "$(cat "$seeds/split/manifest.json")" \
  > "$seeds/node_messages/welcome.json"

echo "== building the targets (nightly, address sanitizer)"
fuzz build --fuzz-dir tests/fuzz -O
bin_dir="$fuzz_target_dir/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
[ -z "${SEEDS_OUT:-}" ] || { rm -rf "$SEEDS_OUT" && cp -r "$seeds" "$SEEDS_OUT"; }

failed=0
for t in "${targets[@]}"; do
  corpus="tests/fixtures/fuzz/$t"
  artifacts="tests/fixtures/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts" "$seeds/grown-$t"
  max_len=4096
  case "$t" in gguf | shard) max_len=262144 ;; node_messages | manifest) max_len=65536 ;; esac
  echo "== $t: $runs runs"
  cp -r "$corpus"/. "$seeds/grown-$t"/ 2>/dev/null || true
  # libFuzzer writes each process's output to fuzz-N.log in its working directory: run in the
  # target's own log directory and sum what the processes report.
  logs="$seeds/logs-$t" && mkdir -p "$logs"
  if ! (cd "$logs" && "$bin_dir/$t" "$seeds/grown-$t" "$seeds/$t" \
    -runs="$(((runs + jobs - 1) / jobs))" -jobs="$jobs" -workers="$jobs" -max_len="$max_len" \
    -rss_limit_mb=4096 -timeout=10 -artifact_prefix="$root/$artifacts/" -print_final_stats=1 \
    >"$logs/run.log" 2>&1); then
    failed=1
    echo "!! $t found a failure (reproducer in $artifacts):"
  fi
  cat "$logs"/fuzz-*.log > "$seeds/$t.log" 2>/dev/null || true
  cat "$logs/run.log" >> "$seeds/$t.log"
  grep -E "^(==|SUMMARY|ERROR)" "$seeds/$t.log" | tail -5 || true
  echo "   executions: $(awk -F: '/^stat::number_of_executed_units/ {n += $NF} END {print n + 0}' \
    "$logs"/fuzz-*.log) over $jobs process(es) at $(awk -F: '/^stat::average_exec_per_sec/ \
    {n += $NF} END {print n + 0}' "$logs"/fuzz-*.log)/s; peak RSS $(awk -F: '/^stat::peak_rss_mb/ \
    {if ($NF > m) m = $NF} END {print m + 0}' "$logs"/fuzz-*.log) MB"
  # Keep a minimised corpus: the seeds and everything the run found that adds coverage.
  rm -rf "$corpus.new" && mkdir -p "$corpus.new"
  fuzz cmin --fuzz-dir tests/fuzz -O "$t" "$seeds/grown-$t" -- \
    -max_len="$max_len" >/dev/null 2>&1 || true
  cp -r "$seeds/grown-$t"/. "$corpus.new"/
  rm -rf "$corpus" && mv "$corpus.new" "$corpus"
  echo "   corpus: $(ls "$corpus" | wc -l) inputs, $(du -sh "$corpus" | cut -f1)"
done
exit $failed
