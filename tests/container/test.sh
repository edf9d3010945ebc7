#!/usr/bin/env bash
# The rlm image, run the way the README says (`podman run -p 7860:7860 -e GOOGLE_API_KEY ...`),
# hardened (`--read-only`, traces on a volume, an API key), against the scripted model served by
# `rlm-mock` on the host. Checks from the host: the page, /v1/models, the key, the Host guard, an
# answer through /v1/chat/completions, the trace on the host side of the volume; and inside: the
# server runs as a non-root user, listens on 0.0.0.0:7860, cannot write its root filesystem, and
# uses the image's precompiled guest. Prints the start-up time (container start to the first page).
#
# Usage: tests/container/test.sh IMAGE RLM_MOCK OUT_DIR
set -euo pipefail
image=$1 mock_bin=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$out" && mkdir -p "$out/traces"

name="rlm-container-test-$$"
"$mock_bin" --url-file "$out/mock-url" > /dev/null &
mock=$!
cleanup() {
    podman rm -f -v -t 0 "$name" > /dev/null 2>&1 || true
    kill "$mock" 2> /dev/null || true
}
trap cleanup EXIT
for _ in $(seq 200); do [ -s "$out/mock-url" ] && break; sleep 0.05; done
mock_url=$(cat "$out/mock-url") # http://127.0.0.1:PORT/v1
mock_port=${mock_url#http://127.0.0.1:}
mock_port=${mock_port%%/*}

# The host port: 7860 as in the README when it is free, else any free one. The container always
# listens on 7860.
port=$(python3 -c '
import socket
s = socket.socket()
try:
    s.bind(("0.0.0.0", 7860))
except OSError:
    s.bind(("0.0.0.0", 0))
print(s.getsockname()[1])')

# The container reaches the host's loopback (where rlm-mock listens) as 10.0.2.2 through
# slirp4netns; published ports work as with the default network.
export RLM_SERVE_API_KEY
RLM_SERVE_API_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
start=$(date +%s%N)
podman run -d --name "$name" --read-only \
    --network slirp4netns:allow_host_loopback=true \
    -p "$port:7860" -e GOOGLE_API_KEY -e RLM_SERVE_API_KEY \
    -v "$out/traces:/traces:U" \
    "$image" --model compat/scripted --base-url "http://10.0.2.2:$mock_port/v1" > /dev/null

fail() {
    echo "container test: $*" >&2
    echo "--- container log:" >&2
    podman logs "$name" >&2 || true
    exit 1
}

python3 - "http://127.0.0.1:$port/" "$name" <<'EOF' || fail "the server did not answer"
import subprocess, sys, time, urllib.request
url, name = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    state = subprocess.run(["podman", "container", "inspect", "-f", "{{.State.Running}}", name],
                           capture_output=True, text=True).stdout.strip()
    if state != "true":
        sys.exit("the container stopped")
    time.sleep(0.02)
sys.exit("no answer in 120 s")
EOF
startup_ms=$((($(date +%s%N) - start) / 1000000))

python3 "$here/check.py" "http://127.0.0.1:$port" "$RLM_SERVE_API_KEY" "$out/traces" ||
    fail "the HTTP checks failed"

# Inside: PID 1 is tini, its child the server; both run as the image's user, not root.
server_pid=$(podman exec "$name" cat /proc/1/task/1/children | tr -d ' ')
[ -n "$server_pid" ] || fail "no server process under the init"
[ "$(podman exec "$name" cat /proc/"$server_pid"/comm)" = rlm ] || fail "the child of the init is not rlm"
# Real, effective, saved and filesystem ids, user and group.
ids=$(podman exec "$name" cat /proc/"$server_pid"/status | awk '/^[UG]id:/ {print $2, $3, $4, $5}' | tr '\n' ' ')
[ "$ids" = "10001 10001 10001 10001 10001 10001 10001 10001 " ] ||
    fail "the server runs as uid/gid $ids, not 10001"
uid=10001
# Listening on all the container's interfaces, port 7860 (0x1EB4), state LISTEN (0A).
podman exec "$name" cat /proc/net/tcp | grep -q '^ *[0-9]*: 00000000:1EB4 00000000:0000 0A' ||
    fail "the server does not listen on 0.0.0.0:7860"
# The root filesystem is read-only, even where the server's own files are.
[ "$(podman container inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$name")" = true ] ||
    fail "the root filesystem is not read-only"
if podman exec "$name" touch /usr/local/lib/rlm/cache/probe 2> /dev/null; then
    fail "the image's cache directory is writable"
fi
# The precompiled guest in the image was used (exactly one artifact, and no compiling at start:
# on a read-only root the server could not have saved a new one).
n=$(podman exec "$name" ls /usr/local/lib/rlm/cache | grep -c '\.cwasm$' || true)
[ "$n" = 1 ] || fail "the image holds $n precompiled guests, not 1 (delete \$CARGO_TARGET_DIR/container/context and rerun just container)"
if podman logs "$name" 2>&1 | grep -q "compiling the sandbox guest"; then
    fail "the server compiled the guest at start instead of using the image's"
fi
podman logs "$name" 2>&1 | grep -q "^rlm serve: http://0.0.0.0:7860/" || fail "no start line in the log"

# Stops on SIGTERM: the init forwards it and the server ends by it (143). Without an init, PID 1
# ignores SIGTERM and podman kills it at the timeout (137).
stop_start=$(date +%s%N)
podman stop -t 10 "$name" > /dev/null
stop_ms=$((($(date +%s%N) - stop_start) / 1000000))
code=$(podman container inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 143 ] || fail "the container ended with $code on podman stop, not 143 (SIGTERM)"

echo "container test: non-root (uid $uid), read-only root, 0.0.0.0:7860 published on host port $port," \
    "precompiled guest used; start-up ${startup_ms} ms (container start to the first page), stop ${stop_ms} ms"
