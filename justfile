# rlm — task runner. Install `just` with `pip install rust-just` (or `cargo install just`).

set shell := ["bash", "-euo", "pipefail", "-c"]

target_dir := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() + "/target")
rlm := target_dir + "/debug/rlm"
example_query := "Which drug is the patient allergic to, and at which visit (number and date) was that allergy first recorded?"

# List the recipes.
default:
    @just --list

# Build the sandbox guest component (CPython via componentize-py, pinned) if its sources changed.
guest:
    ./guest/build.sh

# Build the rlm binary (debug). Always whole-workspace builds, so features resolve one way.
build: guest
    cargo build --workspace

# Ask the sample patient history a question with the model whose key is set.
run-example: build
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -n "${RLM_MODEL:-}${OPENAI_API_KEY:-}${ANTHROPIC_API_KEY:-}${GOOGLE_API_KEY:-}${GEMINI_API_KEY:-}" ]; then
        "{{rlm}}" run --context data/synthetic_patient_data.md --query "{{example_query}}" --trace target/example-trace.jsonl
    else
        echo "No model is configured, so the RLM cannot run. Set one of:" >&2
        echo "  OPENAI_API_KEY (uses openai/gpt-5-mini), ANTHROPIC_API_KEY (anthropic/claude-sonnet-4-5)," >&2
        echo "  GOOGLE_API_KEY or GEMINI_API_KEY (gemini/gemini-2.5-flash)," >&2
        echo "  or RLM_BASE_URL=http://host:port/v1 with RLM_MODEL=compat/<model> for an OpenAI-compatible server." >&2
        echo "Meanwhile, here is the sandbox running the code a root model would write (data/example_steps):" >&2
        "{{rlm}}" exec --context data/synthetic_patient_data.md data/example_steps/*.py
    fi

# Every test: unit, sandbox (real Python in the real guest), clients and loop over real HTTP,
# CLI processes, doc tests.
test: guest
    cargo build --workspace --all-targets
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
