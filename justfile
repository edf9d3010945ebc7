# rlm — task runner. Install `just` with `pip install rust-just` (or `cargo install just`).

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Build the sandbox guest component (CPython via componentize-py, pinned) if its sources changed.
guest:
    ./guest/build.sh

# Build the rlm binary (debug).
build: guest
    cargo build -p rlm-cli

# Run the example: Python steps in the sandbox over the sample document.
run-example: build
    cargo run -q -p rlm-cli -- exec --context data/synthetic_patient_data.md data/example_steps/*.py

# Every test: unit, sandbox (real Python in the real guest), CLI processes, doc tests.
test: guest
    cargo build -p rlm-cli
    # Compile the guest to native code once (cached), rather than in every test process at once.
    echo pass | cargo run -q -p rlm-cli -- exec - > /dev/null
    cargo nextest run --workspace --no-fail-fast
    cargo test --workspace --doc

# Formatting and lints, as CI wants them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks of the sandbox (release build; prints figures, asserts nothing).
bench: guest
    cargo build --release -p rlm-cli
    cargo bench -p rlm-sandbox --bench sandbox
