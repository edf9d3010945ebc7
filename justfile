# rlm — task runner. Install `just` with `pip install rust-just` (or `cargo install just`).

set shell := ["bash", "-euo", "pipefail", "-c"]

target_dir := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() + "/target")
rlm := target_dir + "/debug/rlm"
# The container image `just container` builds, and the Debian base it builds it on (bump the
# suffix when the base's packages change, so it is made again).
image := "localhost/rlm-app"
base_image := "localhost/rlm-base:bookworm-1"
example_query := "Which new drug allergy was recorded for the patient, and what did the drug cause?"

# List the recipes.
default:
    @just --list

# Build the sandbox guest component (CPython via componentize-py, pinned) into target/guest/ if
# its sources changed. Builds do not need it: rlm-sandbox's build script runs the same script for
# the guest it embeds. For RLM_GUEST_WASM / --guest, or to ship the file.
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
build: system-deps
    cargo build --workspace

# Ask the sample patient history a question: with the model whose key is set, else offline on
# the local 0.5B model (fetched on first use).
run-example: build
    "{{rlm}}" run --context data/synthetic_patient_data.md --query "{{example_query}}" --trace target/example-trace.jsonl

# Every test: unit, sandbox (real Python in the real guest), clients and loop over real HTTP,
# CLI processes, doc tests.
test: system-deps
    cargo build --workspace --all-targets
    "{{rlm}}" fetch-model qwen2.5-coder-0.5b
    # Compile the guest to native code once (cached), rather than in every test process at once.
    echo pass | "{{rlm}}" exec - > /dev/null
    # Property tests use one fixed seed here, so a run is repeatable (cargo nextest alone
    # explores new random cases each time).
    PROPTEST_RNG_SEED=20261130 cargo nextest run --workspace --no-fail-fast
    cargo test --workspace --doc
    just eval-smoke
    just serve-test
    just mcp-test
    just py-test
    just examples-test
    just out-of-tree-test
    just container-test

# Run the evaluation harness: `just eval run --dataset all --sizes 8k,128k ...`, `just eval report
# eval/results.jsonl` (see the README's "Evaluation" section).
eval *args: build
    "{{rlm}}" eval {{args}}

# The whole harness on small sizes with the scripted model (no hosted model, no key): every
# dataset × method, then the report and plot in target/eval-smoke/. Fails if an RLM method
# scores below 100%.
eval-smoke: build
    #!/usr/bin/env bash
    set -euo pipefail
    out="{{target_dir}}/eval-smoke"
    rm -rf "$out" && mkdir -p "$out"
    "{{target_dir}}/debug/rlm-mock" --url-file "$out/url" > /dev/null &
    mock=$!
    trap 'kill $mock 2>/dev/null || true' EXIT
    for _ in $(seq 200); do [ -s "$out/url" ] && break; sleep 0.05; done
    export RLM_PRICES="{{justfile_directory()}}/data/eval/scripted-prices.json"
    "{{rlm}}" eval run --model compat/scripted --base-url "$(cat "$out/url")" \
        --dataset all --sizes 4k,16k,64k --tasks-per-size 2 --seed 1 \
        --method direct --method rlm-d0 --method rlm --method rlm-d2 \
        --direct-window 16k --sub-context-tokens 8k --concurrency 8 \
        --judge compat/scripted --out "$out/results.jsonl"
    "{{rlm}}" eval report "$out/results.jsonl" \
        --min-score rlm-d0=1 --min-score rlm=1 --min-score rlm-d2=1 > /dev/null
    echo "eval smoke: report in $out/report.md, plot in $out/report.svg"

# The offline quality benchmark: the local 1.5B model (fetched once, 1.1 GB) on s-niah, oolong
# and multi-hop at 4K, 16K and 64K tokens (64K is beyond its 16K window), `direct` against `rlm`,
# `tasks` tasks each. Measured on 2 cores: `direct` takes 60-115 s per task at 4K and 440-570 s
# at 16K (it reads a whole window) and fails at once beyond the window, `rlm` 15-60 s; `just
# eval-local 1` took 25 minutes, the default (2 tasks) about 55-65. Writes the results, traces
# and report to target/eval-local/ (re-running starts afresh). Not part of `just test` (too slow).
eval-local tasks="2" sizes="4k,16k,64k": build
    #!/usr/bin/env bash
    set -euo pipefail
    out="{{target_dir}}/eval-local"
    mkdir -p "$out"
    "{{rlm}}" fetch-model qwen2.5-coder-1.5b
    "{{rlm}}" eval run --model local/qwen2.5-coder-1.5b \
        --dataset s-niah --dataset oolong --dataset multi-hop \
        --sizes {{sizes}} --tasks-per-size {{tasks}} --seed 1 \
        --method direct --method rlm --max-iterations 8 \
        --concurrency 1 --requests 1 --fresh --out "$out/results.jsonl" || status=$?
    # `eval run` exits non-zero when a unit errored: here `direct` beyond the model's window
    # does by design ("the conversation is ... tokens, more than the local model's context").
    "{{rlm}}" eval report "$out/results.jsonl" | tee "$out/report.md"
    echo "eval-local: report in $out/report.md, traces in $out/traces/ (eval run exit code ${status:-0})"

# Start the web page and OpenAI-compatible API on http://127.0.0.1:7860 (model flags as `rlm run`).
serve *args: build
    "{{rlm}}" serve {{args}}

# Chromium and its driver for the browser test (Debian packages), if missing.
browser-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing chromium and chromium-driver (for the browser test)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "error: the browser test needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)" >&2
        exit 1
    fi

# `rlm serve` end to end: the official openai client against the API, and the page in headless
# Chromium (screenshots in target/serve-test/). Uses the scripted model; no key needed.
serve-test: build browser-deps
    #!/usr/bin/env bash
    set -euo pipefail
    out="{{target_dir}}/serve-test"
    rm -rf "$out" && mkdir -p "$out/traces"
    venv="{{target_dir}}/serve-test-venv"
    if ! cmp -s tests/serve/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
        rm -rf "$venv" && python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -r tests/serve/requirements.txt
        cp tests/serve/requirements.txt "$venv/requirements.txt"
    fi
    "{{target_dir}}/debug/rlm-mock" --url-file "$out/mock-url" --delay-ms 300 > /dev/null &
    pids=($!)
    trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
    for _ in $(seq 200); do [ -s "$out/mock-url" ] && break; sleep 0.05; done
    key="serve-test-key"
    "{{rlm}}" serve --port 0 --model compat/scripted --base-url "$(cat "$out/mock-url")" \
        --api-key "$key" --trace-dir "$out/traces" 2> "$out/serve.log" &
    pids+=($!)
    for _ in $(seq 400); do grep -q "^rlm serve: " "$out/serve.log" && break; sleep 0.05; done
    base=$(grep -o "^rlm serve: http://[0-9.:]*" "$out/serve.log" | cut -d' ' -f3)
    "$venv/bin/python" tests/serve/openai_client.py "$base" "$key"
    trace=$(ls "$out"/traces/*.jsonl | head -1)
    "$venv/bin/python" tests/serve/browser.py "$base" "$key" "$trace" "$out"

# `rlm mcp` driven by the official MCP Python SDK (pinned in tests/mcp/requirements.txt) over
# stdio with the scripted model: tool listing, a call with progress notifications, the trace
# tools, a cancelled call (on a mock slowed by --delay-ms) and refused paths. No key needed.
mcp-test: build
    #!/usr/bin/env bash
    set -euo pipefail
    out="{{target_dir}}/mcp-test"
    rm -rf "$out" && mkdir -p "$out"
    venv="{{target_dir}}/mcp-test-venv"
    if ! cmp -s tests/mcp/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
        rm -rf "$venv" && python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -r tests/mcp/requirements.txt
        cp tests/mcp/requirements.txt "$venv/requirements.txt"
    fi
    "{{target_dir}}/debug/rlm-mock" --url-file "$out/fast-url" > /dev/null &
    pids=($!)
    trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
    "{{target_dir}}/debug/rlm-mock" --url-file "$out/slow-url" --delay-ms 1500 > /dev/null &
    pids+=($!)
    for _ in $(seq 200); do [ -s "$out/fast-url" ] && [ -s "$out/slow-url" ] && break; sleep 0.05; done
    "$venv/bin/python" tests/mcp/client.py "{{rlm}}" "$(cat "$out/fast-url")" "$(cat "$out/slow-url")" "$out"

# Podman, runc, slirp4netns, mmdebstrap and strip (Debian packages) for the container image, if
# missing.
container-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=()
    for p in podman runc slirp4netns mmdebstrap strip:binutils; do
        command -v "${p%%:*}" > /dev/null || missing+=("${p##*:}")
    done
    [ ${#missing[@]} -eq 0 ] && exit 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing ${missing[*]} (for the container image)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "error: the container image needs ${missing[*]} (Debian: apt-get install podman runc slirp4netns mmdebstrap binutils)" >&2
        exit 1
    fi

# The container image (localhost/rlm-app, `rlm serve` on port 7860): the binary built here
# without local models (cargo profile `image`: release settings, in target/image/), the guest and its precompiled native code, on a Debian bookworm base
# made once from Debian packages with mmdebstrap (no image registry needed). See the README.
container: guest container-deps
    #!/usr/bin/env bash
    set -euo pipefail
    export CONTAINERS_CONF="${CONTAINERS_CONF:-{{justfile_directory()}}/tests/container/containers.conf}"
    # Its own profile (target/image/): the release `rlm` with local models stays as it is.
    cargo build --profile image -p rlm-cli --no-default-features
    ctx="{{target_dir}}/container/context"
    mkdir -p "$ctx/cache"
    # The precompiled guest depends on the guest, wasmtime's version (Cargo.lock) and the engine's
    # settings (engine.rs): when one changes, the cache starts afresh, so the image holds one.
    key=$(cat target/guest/rlm_guest.wasm Cargo.lock crates/rlm-sandbox/src/engine.rs | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$ctx/cache.key" 2>/dev/null)" != "$key" ]; then rm -f "$ctx"/cache/*; fi
    cp target/guest/rlm_guest.wasm "$ctx/rlm_guest.wasm"
    strip --strip-debug -o "$ctx/rlm" "{{target_dir}}/image/rlm"
    echo pass | RLM_CACHE_DIR="$ctx/cache" RLM_GUEST_WASM="$ctx/rlm_guest.wasm" "$ctx/rlm" exec - > /dev/null
    echo "$key" > "$ctx/cache.key"
    # The base: made once from Debian packages, kept as an image and as a tarball beside the
    # build (so a machine with a fresh image store but this target dir only imports it).
    base_tar="{{target_dir}}/container/{{replace(replace(base_image, "localhost/", ""), ":", "-")}}.tar"
    if ! podman image exists {{base_image}}; then
        if [ ! -s "$base_tar" ]; then
            echo "container: making the base image {{base_image}} from Debian packages (mmdebstrap)" >&2
            tmp=$(mktemp -d)
            trap 'rm -rf "$tmp"' EXIT
            mmdebstrap --variant=essential --include=ca-certificates,passwd,tini \
                --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
                --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
                --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
                --dpkgopt='path-include=/usr/share/doc/*/copyright' \
                bookworm "$tmp/rootfs.tar" > "$tmp/log" 2>&1 || { cat "$tmp/log" >&2; exit 1; }
            mv "$tmp/rootfs.tar" "$base_tar"
        fi
        podman import --quiet "$base_tar" {{base_image}} > /dev/null
    fi
    previous=$(podman image inspect {{image}} --format '{{{{.Id}}' 2>/dev/null || true)
    podman build --quiet -t {{image}} --build-arg BASE={{base_image}} -f Containerfile "$ctx" > /dev/null
    # The image it replaces (untagged now) goes, unless a container still uses it.
    if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect {{image}} --format '{{{{.Id}}')" ]; then
        podman rmi "$previous" > /dev/null 2>&1 || true
    fi
    size=$(podman image inspect {{image}} --format '{{{{.Size}}')
    echo "container: built {{image}} ($((size / 1000000)) MB)"

# The image run as the README says (published port, -e GOOGLE_API_KEY), read-only, non-root, with
# traces on a volume, against the scripted model on the host (rlm-mock); checks from the host and
# inside (tests/container/test.sh). No key or registry needed.
# Also checks that building the image left the release `rlm` (local models) as it was.
container-test: build
    #!/usr/bin/env bash
    set -euo pipefail
    export CONTAINERS_CONF="${CONTAINERS_CONF:-{{justfile_directory()}}/tests/container/containers.conf}"
    release="{{target_dir}}/release/rlm"
    before=$(if [ -e "$release" ]; then sha256sum < "$release"; fi)
    just container
    after=$(if [ -e "$release" ]; then sha256sum < "$release"; fi)
    if [ "$before" != "$after" ]; then
        echo "error: just container replaced $release (it must build into target/image/)" >&2
        exit 1
    fi
    tests/container/test.sh {{image}} "{{target_dir}}/debug/rlm-mock" "{{target_dir}}/container-test"

# Start the scripted model's mock server for a test recipe: writes its URL to DIR/url; the
# caller kills the pid it prints. Also writes DIR/notes.txt, a document with two needles.
[private]
mock-for dir:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p "{{dir}}"
    "{{target_dir}}/debug/rlm-mock" --url-file "{{dir}}/url" > /dev/null 2>&1 &
    echo $!
    for i in $(seq 3000); do
        echo "Line $i: minutes of a meeting where nothing was decided."
        [ "$i" = 1234 ] && echo "The access code for project Falcon-7 is 482913."
        [ "$i" = 2718 ] && echo "The access code for project Heron-2 is 105577."
    done > "{{dir}}/notes.txt"
    for _ in $(seq 200); do [ -s "{{dir}}/url" ] && exit 0; sleep 0.05; done
    echo "rlm-mock did not start" >&2; exit 1

# The examples of crates/rlm/examples, run against the scripted model on the mock server (the
# `tools` example is only built: the scripted model does not call custom tools).
examples-test: build
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --workspace --examples
    out="{{target_dir}}/examples-test"
    rm -rf "$out"
    mock=$(just mock-for "$out")
    trap 'kill $mock 2>/dev/null || true' EXIT
    export RLM_MODEL=compat/scripted RLM_BASE_URL="$(cat "$out/url")"
    ex="{{target_dir}}/debug/examples"
    q1="What is the access code for project Falcon-7?"
    q2="What is the access code for project Heron-2?"
    answer=$("$ex/ask_file" "$out/notes.txt" "$q1")
    [ "$answer" = 482913 ] || { echo "ask_file answered '$answer', expected 482913" >&2; exit 1; }
    "$ex/session" "$out/notes.txt" "$q1" "$q2" > "$out/session.txt"
    printf 'Q: %s\nA: 482913\nQ: %s\nA: 105577\n' "$q1" "$q2" | diff - "$out/session.txt"
    echo "examples: ask_file and session answered"

# A crate outside this workspace (tests/out-of-tree) that depends on rlm by path, built with this
# target dir and run with no other step (no `just guest`, no RLM_GUEST_WASM): the guest must
# come with the crate.
out-of-tree-test: build
    #!/usr/bin/env bash
    set -euo pipefail
    crate=tests/out-of-tree
    # The workspace's versions of every dependency, so the build reuses what is compiled.
    cp Cargo.lock "$crate/Cargo.lock"
    cargo build --manifest-path "$crate/Cargo.toml" --target-dir "{{target_dir}}"
    out="{{target_dir}}/out-of-tree-test"
    rm -rf "$out"
    mock=$(just mock-for "$out")
    trap 'kill $mock 2>/dev/null || true' EXIT
    answer=$(cd "$out" && env -u RLM_GUEST_WASM RLM_MODEL=compat/scripted RLM_BASE_URL="$(cat url)" \
        "{{target_dir}}/debug/rlm-out-of-tree" notes.txt "What is the access code for project Heron-2?")
    [ "$answer" = 105577 ] || { echo "the out-of-tree program answered '$answer', expected 105577" >&2; exit 1; }
    echo "out-of-tree: a program depending on rlm by path answered"

# Formatting and lints, as CI wants them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    # The README's build without local models must keep compiling.
    cargo clippy -p rlm-cli --no-default-features -- -D warnings

# Benchmarks (release build; prints figures, asserts nothing).
bench:
    cargo build --release -p rlm-cli
    cargo bench -p rlm-sandbox --bench sandbox
    cargo bench -p rlm --bench loop
    just py-bench
    just peer-bench

# The peers' figures for the rows of `just bench` (Monty, the official RLM's LocalREPL, eryx),
# from PyPI into a private venv (pinned in crates/rlm-py/bench/peers-requirements.txt); a peer
# that does not install here is printed with its earlier figure, labelled. PEERS_BIG=1 adds the
# official RLM with a 1 GiB context (about 3 GB of RAM).
peer-bench:
    #!/usr/bin/env bash
    set -euo pipefail
    venv="{{target_dir}}/peers-venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r crates/rlm-py/bench/peers-requirements.txt \
        || echo "peer-bench: some peers did not install; their earlier figures are printed" >&2
    "$venv/bin/python" crates/rlm-py/bench/peers.py

# The Python package (crates/rlm-py, import name rlm_rs): an abi3 wheel for CPython 3.9+ with
# the sandbox guest inside, into <target>/wheels. maturin comes from PyPI into a private venv
# (pinned in tests/python/requirements.txt). The default profile is dev: it shares every
# compiled dependency with `just build`/`just test` (dev already optimises dependencies);
# `just wheel release` makes a release wheel (a release build of wasmtime, ~10 min cold).
wheel profile="dev": guest py-venv
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p crates/rlm-py/python/rlm_rs/_guest
    cp target/guest/rlm_guest.wasm crates/rlm-py/python/rlm_rs/_guest/rlm_guest.wasm
    rm -f "{{target_dir}}"/wheels/rlm_rs-*.whl
    "{{target_dir}}/py-venv/bin/maturin" build --quiet -m crates/rlm-py/Cargo.toml \
        --profile {{profile}} --strip --interpreter "{{target_dir}}/py-venv/bin/python" \
        --out "{{target_dir}}/wheels"
    ls -l "{{target_dir}}"/wheels/rlm_rs-*.whl

# The venv that builds and tests the Python package (maturin, pytest, dspy; pinned).
py-venv:
    #!/usr/bin/env bash
    set -euo pipefail
    venv="{{target_dir}}/py-venv"
    if ! cmp -s tests/python/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
        rm -rf "$venv" && python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
        cp tests/python/requirements.txt "$venv/requirements.txt"
    fi

# The Python package's tests: install the wheel into the venv, then run pytest from a temporary
# directory, so they import the installed wheel (and its own guest), not the source tree.
py-test *args: wheel
    #!/usr/bin/env bash
    set -euo pipefail
    venv="{{target_dir}}/py-venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps \
        "{{target_dir}}"/wheels/rlm_rs-*.whl
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cp -r tests/python "$tmp/tests"
    cd "$tmp" && env -u RLM_GUEST_WASM "$venv/bin/python" -m pytest -q -p no:cacheprovider tests {{args}}

# Figures of the installed Python package: import time, first Sandbox (cold and cached compile),
# a 10-step session, and the DSPy interpreter against DSPy's default one (Deno + Pyodide).
py-bench: wheel
    #!/usr/bin/env bash
    set -euo pipefail
    venv="{{target_dir}}/py-venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps \
        "{{target_dir}}"/wheels/rlm_rs-*.whl
    # Deno for DSPy's default interpreter (the comparison is skipped if it cannot install).
    "$venv/bin/pip" install -q --disable-pip-version-check -r crates/rlm-py/bench/requirements.txt \
        || echo "py-bench: deno did not install; the DSPy comparison is skipped" >&2
    cd "$(mktemp -d)" && "$venv/bin/python" "{{justfile_directory()}}/crates/rlm-py/bench/bench.py"
