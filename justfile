# rlm — task runner. Install `just` with `pip install rust-just` (or `cargo install just`).

set shell := ["bash", "-euo", "pipefail", "-c"]

target_dir := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() + "/target")
rlm := target_dir + "/debug/rlm"
example_query := "Which new drug allergy was recorded for the patient, and what did the drug cause?"

# List the recipes.
default:
    @just --list

# Build the sandbox guest component (CPython via componentize-py, pinned) if its sources changed.
guest:
    ./guest/build.sh

# System packages the local model backend (llama.cpp) needs to build: cmake and libclang.
system-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v cmake >/dev/null && { ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ldconfig -p | grep -q libclang; }; then
        exit 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing cmake and libclang-dev (needed to build llama.cpp for local models)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake libclang-dev >/dev/null
    elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake libclang-dev >/dev/null
    else
        echo "error: building the local model backend needs cmake and libclang. Install them with your" >&2
        echo "package manager (Debian/Ubuntu: apt-get install cmake libclang-dev), or build without" >&2
        echo "local models: cargo build -p rlm-cli --no-default-features" >&2
        exit 1
    fi

# Download, assemble and verify the offline model (491 MB, once) into ~/.cache/rlm/models.
fetch-model name="qwen2.5-coder-0.5b": build
    "{{rlm}}" fetch-model {{name}}

# Build the rlm binary (debug). Always whole-workspace builds, so features resolve one way.
build: guest system-deps
    cargo build --workspace

# Ask the sample patient history a question: with the model whose key is set, else offline on
# the local 0.5B model (fetched on first use).
run-example: build
    "{{rlm}}" run --context data/synthetic_patient_data.md --query "{{example_query}}" --trace target/example-trace.jsonl

# Every test: unit, sandbox (real Python in the real guest), clients and loop over real HTTP,
# CLI processes, doc tests.
test: guest system-deps
    cargo build --workspace --all-targets
    "{{rlm}}" fetch-model qwen2.5-coder-0.5b
    # Compile the guest to native code once (cached), rather than in every test process at once.
    echo pass | "{{rlm}}" exec - > /dev/null
    cargo nextest run --workspace --no-fail-fast
    cargo test --workspace --doc

# Formatting and lints, as CI wants them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks (release build; prints figures, asserts nothing).
bench: guest
    cargo build --release -p rlm-cli
    cargo bench -p rlm-sandbox --bench sandbox
    cargo bench -p rlm --bench loop
