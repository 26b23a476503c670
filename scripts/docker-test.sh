#!/usr/bin/env bash
# Proves the Docker image works on this machine (make docker-test; .ci/run calls it):
# starts dockerd if none runs, builds a Debian base image when python:3.11-slim cannot be
# pulled, builds the project image, runs it on a loopback port, creates a short run over
# HTTP, reads its SSE stream to the end and its series, restarts the container and finds the
# run still there. Everything it starts or makes is removed by the EXIT trap; any failing
# step stops the script with a message and a non-zero status.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

IMAGE=${DEPTHSCOPE_IMAGE:-depthscope:docker-test}
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
LOCAL_BASE=depthscope-base:bookworm
# Persistent, so a second run reuses the base image and the build cache (minutes saved).
DOCKER_DATA_ROOT=${DOCKER_DATA_ROOT:-/var/lib/depthscope-docker}
EXTRA="$ROOT/scripts/docker-extra"
WORK=$(mktemp -d /tmp/depthscope-docker-test.XXXXXX)
NAME="depthscope-test-$$"
VOLUME="depthscope-test-data-$$"
PY=$(command -v "$ROOT/.venv/bin/python" || command -v python3)
DOCKERD_PID=""

log() { printf '[docker-test %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
trap 'log "FAILED at line $LINENO: $BASH_COMMAND"' ERR

cleanup() {
    local status=$?
    trap - ERR
    set +e
    if [[ -n "${DOCKER_READY:-}" ]]; then
        [[ $status -ne 0 ]] && docker logs --tail 40 "$NAME" 2>&1 | sed 's/^/  container: /' >&2
        docker rm -f "$NAME" >/dev/null 2>&1
        docker volume rm "$VOLUME" >/dev/null 2>&1
        # In our own daemon's store only: images an earlier build left untagged (the current
        # image and its build cache stay).
        [[ -n "$DOCKERD_PID" ]] && docker image prune -f >/dev/null 2>&1
    fi
    rm -rf "$EXTRA/pip.conf" "$EXTRA/ca-bundle.crt" "$EXTRA/wheels"
    if [[ -n "$DOCKERD_PID" ]]; then
        log "stopping the dockerd this script started (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
        kill -9 "$DOCKERD_PID" 2>/dev/null
        # dockerd leaves its network namespace mounted under its exec root.
        awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount
    fi
    rm -rf "$WORK"
    if [[ $status -eq 0 ]]; then log "PASSED"; else log "FAILED (exit $status)"; fi
    exit "$status"
}
trap cleanup EXIT

# ---- 1. a Docker daemon --------------------------------------------------------------------
start_dockerd() {  # $1: extra dockerd flags (e.g. a storage driver)
    local sock="$WORK/docker.sock"
    # No iptables: this machine's firewall is not ours to change. Published ports still work
    # through docker-proxy, and the build uses the host network to reach the package index.
    # shellcheck disable=SC2086
    dockerd --host "unix://$sock" --data-root "$DOCKER_DATA_ROOT" --exec-root "$WORK/exec" \
        --pidfile "$WORK/dockerd.pid" --iptables=false --ip6tables=false $1 \
        >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    export DOCKER_HOST="unix://$sock"
    for _ in $(seq 30); do
        docker info >/dev/null 2>&1 && return 0
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 1
    done
    log "dockerd $1 did not come up; its log ends with:"
    tail -5 "$WORK/dockerd.log" >&2
    kill "$DOCKERD_PID" 2>/dev/null; wait "$DOCKERD_PID" 2>/dev/null || true
    DOCKERD_PID=""
    return 1
}

if docker info >/dev/null 2>&1; then
    log "using the running Docker daemon"
else
    if ! command -v dockerd >/dev/null; then
        log "installing Debian's docker.io"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    fi
    log "starting dockerd (data in $DOCKER_DATA_ROOT)"
    start_dockerd "" || start_dockerd "--storage-driver=vfs" || die "dockerd cannot run here"
    log "dockerd running as pid $DOCKERD_PID"
fi
DOCKER_READY=1

# ---- 2. a base image -----------------------------------------------------------------------
debian_mirror() {  # the Debian mirror apt already uses, deb822 or one-line format
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*)
    local uri
    uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u ~ /debian\/?$/ {print u; exit}' \
        "${files[@]}" 2>/dev/null || true)
    if [[ -z "$uri" ]]; then
        uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' "${files[@]}" 2>/dev/null \
            || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

build_local_base() {
    command -v debootstrap >/dev/null || {
        log "installing debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    local mirror rootfs="$WORK/rootfs"
    mirror=$(debian_mirror)
    log "debootstrap bookworm from $mirror (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    # The host's CA bundle: pip inside the build must trust what the host trusts (a proxy's CA).
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/usr/local/share/ca-certificates/host.crt"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs"
}

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 \
    || timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image: $BASE_IMAGE"
elif docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    BASE_IMAGE=$LOCAL_BASE
    log "cannot pull the default base; reusing $LOCAL_BASE built earlier"
else
    log "cannot pull $BASE_IMAGE; building $LOCAL_BASE from Debian packages"
    build_local_base
    BASE_IMAGE=$LOCAL_BASE
fi

# ---- 3. the project image --------------------------------------------------------------------
# pip in the build reaches the index the way the host's pip does: same index URLs, same CA.
prepare_extras() {
    local config index extra
    config=$("$PY" -m pip config list 2>/dev/null || true)
    index=$(sed -n "s/^\(global\|:env:\)\.index-url='\(.*\)'$/\2/p" <<<"$config" | head -1)
    # file:// indexes live on the host's disk only; the wheels they matter for are copied below.
    extra=$(sed -n "s/^\(global\|:env:\)\.extra-index-url='\(.*\)'$/\2/p" <<<"$config" \
        | tr ' ' '\n' | grep -E '^https?://' | tr '\n' ' ' || true)
    cp /etc/ssl/certs/ca-certificates.crt "$EXTRA/ca-bundle.crt"
    {
        echo "[global]"
        echo "cert = /tmp/extra/ca-bundle.crt"
        [[ -n "$index" ]] && echo "index-url = $index"
        [[ -n "${extra// /}" ]] && echo "extra-index-url = $extra"
        echo "find-links = /tmp/extra/wheels"
    } >"$EXTRA/pip.conf"
    mkdir -p "$EXTRA/wheels"
    local wheel
    wheel=$(ls /opt/wheels/torch-2.13.0+cpu-cp311-*.whl 2>/dev/null | head -1 || true)
    if [[ -n "$wheel" ]]; then
        cp "$wheel" "$EXTRA/wheels/"
        log "using the local torch wheel $(basename "$wheel")"
    fi
}
prepare_extras
log "building $IMAGE on $BASE_IMAGE (the first build takes a few minutes)"
docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" . \
    >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; die "docker build failed"; }
log "image built: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

# ---- 4. run it, use it, restart it ---------------------------------------------------------
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
docker run -d --name "$NAME" -p "127.0.0.1:$PORT:8000" -v "$VOLUME:/data" "$IMAGE" >/dev/null
log "container $NAME listening on $URL"
SMOKE="$ROOT/scripts/docker_smoke.py"
wait_for_server() {  # fails at once, with the container's log, if the container has exited
    for _ in $(seq 60); do
        [[ $(docker inspect -f '{{.State.Running}}' "$NAME") == true ]] \
            || die "the container exited: $(docker logs --tail 5 "$NAME" 2>&1)"
        "$PY" "$SMOKE" wait "$URL" 2 2>/dev/null && return 0
    done
    die "$URL/api/health did not answer ok within two minutes"
}
wait_for_server
RUN_ID=$("$PY" "$SMOKE" create "$URL")
log "run $RUN_ID streamed to the end; series read"

log "restarting the container"
docker restart "$NAME" >/dev/null
wait_for_server
"$PY" "$SMOKE" check "$URL" "$RUN_ID"
log "run $RUN_ID survived the restart"

for _ in $(seq 60); do
    health=$(docker inspect -f '{{.State.Health.Status}}' "$NAME")
    [[ "$health" == healthy ]] && break
    sleep 1
done
[[ "$health" == healthy ]] || die "HEALTHCHECK says '$health'"
user=$(docker exec "$NAME" id -u)
[[ "$user" != 0 ]] || die "the container runs as root"
log "HEALTHCHECK healthy; server runs as uid $user"
# Informational: the kernels are built only where the image build could install a compiler.
log "probe statistics: $(docker exec "$NAME" python3 -m depthscope.probe.backends.kernels 2>&1 | tail -1)"
