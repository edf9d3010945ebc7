#!/usr/bin/env bash
# Build the sandbox guest component (guest/wit + guest/app -> rlm_guest.wasm): the one way the
# guest is built. `just guest` runs it for target/guest/; crates/rlm-sandbox/build.rs runs it
# for the copy every build embeds.
#
#   guest/build.sh [OUT_DIR]        (default: target/guest of this repository)
#
# Installs the pinned componentize-py into a private venv (RLM_GUEST_VENV, default
# ~/.cache/rlm/guest-venv) on first use. Built guests are kept by input hash in
# ~/.cache/rlm/guest-build (RLM_CACHE_DIR overrides ~/.cache/rlm), so every build directory,
# profile and checkout of the same sources shares one build; OUT_DIR is refreshed only when the
# WIT, the Python app or the componentize-py pin changed.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPONENTIZE_PY_VERSION="0.25.1"
OUT_DIR="${1:-target/guest}"
OUT="$OUT_DIR/rlm_guest.wasm"
CACHE="${RLM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rlm}"
VENV="${RLM_GUEST_VENV:-$CACHE/guest-venv}"
STORE="$CACHE/guest-build"
PYTHON="${PYTHON:-python3}"
# Built guests kept in the store (the newest; older ones are deleted).
KEEP=4

inputs_hash() {
    { echo "componentize-py $COMPONENTIZE_PY_VERSION"
      find guest/wit guest/app -type f \( -name '*.wit' -o -name '*.py' \) -not -path '*/__pycache__/*' \
          | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done
    } | sha256sum | cut -d' ' -f1
}

HASH="$(inputs_hash)"
if [ -f "$OUT" ] && [ -f "$OUT.inputs" ] && [ "$(cat "$OUT.inputs")" = "$HASH" ]; then
    echo "guest: $OUT is up to date" >&2
    exit 0
fi

mkdir -p "$STORE" "$OUT_DIR"
# One build at a time per cache (parallel cargo builds, several checkouts).
if command -v flock >/dev/null; then
    exec 9>"$STORE/.lock"
    flock 9
fi

STORED="$STORE/$HASH.wasm"
if [ ! -f "$STORED" ]; then
    if ! command -v "$PYTHON" >/dev/null || ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        echo "error: building the rlm sandbox guest needs Python 3 with venv and pip ('$PYTHON' is" >&2
        echo "missing or lacks them; Debian/Ubuntu: apt-get install python3 python3-venv, or set" >&2
        echo "PYTHON to another interpreter). It installs componentize-py $COMPONENTIZE_PY_VERSION from" >&2
        echo "PyPI into $VENV once. Or set RLM_EMBED_GUEST to a prebuilt rlm_guest.wasm." >&2
        exit 1
    fi
    if [ ! -x "$VENV/bin/componentize-py" ] || \
       [ "$("$VENV/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
        echo "guest: installing componentize-py==$COMPONENTIZE_PY_VERSION into $VENV" >&2
        "$PYTHON" -m venv "$VENV"
        if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"; then
            echo "error: could not install componentize-py $COMPONENTIZE_PY_VERSION from PyPI into $VENV" >&2
            echo "(offline? set PIP_INDEX_URL to a mirror, or RLM_EMBED_GUEST to a prebuilt rlm_guest.wasm)" >&2
            exit 1
        fi
    fi
    echo "guest: building rlm_guest.wasm (componentize-py $COMPONENTIZE_PY_VERSION, ~20 s)" >&2
    "$VENV/bin/componentize-py" -d guest/wit -w sandbox componentize -p guest/app rlm_guest -o "$STORED.tmp.$$"
    mv "$STORED.tmp.$$" "$STORED"
    # Keep the newest few builds.
    ls -t "$STORE"/*.wasm 2>/dev/null | tail -n +$((KEEP + 1)) | while read -r old; do rm -f "$old"; done
else
    touch "$STORED"
fi

cp "$STORED" "$OUT.tmp.$$"
mv "$OUT.tmp.$$" "$OUT"
echo "$HASH" > "$OUT.inputs"
echo "guest: $OUT ($(stat -c %s "$OUT") bytes)" >&2
