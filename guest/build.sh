#!/usr/bin/env bash
# Build the sandbox guest component (guest/wit + guest/app -> target/guest/rlm_guest.wasm).
# Installs the pinned componentize-py into a private venv under target/ on first use, and
# rebuilds only when the WIT, the Python app or the componentize-py pin changed.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPONENTIZE_PY_VERSION="0.25.1"
OUT_DIR="target/guest"
OUT="$OUT_DIR/rlm_guest.wasm"
VENV="${RLM_GUEST_VENV:-target/guest-venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/componentize-py" ] || \
   [ "$("$VENV/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    echo "guest: installing componentize-py==$COMPONENTIZE_PY_VERSION into $VENV" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

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

mkdir -p "$OUT_DIR"
echo "guest: building $OUT (componentize-py $COMPONENTIZE_PY_VERSION, ~20 s)" >&2
"$VENV/bin/componentize-py" -d guest/wit -w sandbox componentize -p guest/app rlm_guest -o "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$HASH" > "$OUT.inputs"
echo "guest: built $OUT ($(stat -c %s "$OUT") bytes)" >&2
