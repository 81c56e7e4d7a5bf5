#!/usr/bin/env bash
# compose.sh - Meridian in containers: 3 regions (us, eu, ap) x 2 nodes and one demo upstream per
# region, as described in docker-compose.yml.
#
# Usage: scripts/compose.sh up|down|test|status|logs [ARGS...]
#   up      1. build a static meridian (cargo, target HOST_TRIPLE with +crt-static; a no-op when
#              up to date, ~5 min from scratch on 2 cores),
#           2. build the image meridian:dev from docker/Dockerfile (context docker/build/, gitignored),
#           3. create what is missing under .compose/ (gitignored): the cluster CA (.compose/ca/,
#              ca.key never leaves it), each node's ca.pem/ID.pem/ID.key (.compose/tls/ID/), the
#              admin token (.compose/config/admin-token) and the first routing table
#              (.compose/config/routes.json: service echo, routes /limited and /),
#           4. docker-compose up -d, wait until every node's /readyz is 200, print the nodes.
#           Afterwards plain `docker-compose up -d|stop|start|logs` works as well.
#   down    docker-compose down -v: removes the containers, networks and Raft data volumes
#           (ARGS are passed on, e.g. `--rmi all` also removes the image). .compose/ is kept;
#           delete it to get a new CA, token and routing table.
#   test    run the fault scenarios of scripts/compose_test.py against the cluster (upstream
#           stopped, node cut off the network, leader killed, rolling restart under load, route
#           change propagation), bringing the cluster up first when it is not running.
#           ARGS are passed on, e.g. `test --scenarios a,e`.
#   status  the node table (id, region, container, Raft role, leader, routing version, ready).
#   logs    docker-compose logs ARGS (e.g. `logs -f us-1`).
# Environment:
#   MERIDIAN_STATIC_BIN  use this static meridian binary instead of building one
#   HOST_TRIPLE          cargo target to build (default: rustc's host, e.g. x86_64-unknown-linux-gnu)
#   READY_TIMEOUT        seconds `up` waits for every node to be ready (default 120)
#   TEST_MAX_SECONDS     hard limit for the scenarios of `test` (default 300)
#   COMPOSE_PROJECT_NAME as for docker-compose (default: this directory's name)
# Requires docker with `docker compose` or `docker-compose`, python3 >= 3.9 (standard library),
# cargo unless MERIDIAN_STATIC_BIN is given, and a Linux host: readiness checks and tests reach the
# nodes at their container addresses on the inter-region network (us-1 is also published on
# 127.0.0.1:8080 and 127.0.0.1:9901).
# Exit status: 0 ok; 1 error (build, image, a node not ready within READY_TIMEOUT, ...);
#   2 usage; 3 a test scenario failed; 130 interrupted.
# Every wait is bounded. Progress goes to stderr; the node table and test results to stdout.
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf '[compose] %s\n' "$*" >&2; }
die() {
    printf '[compose] ERROR: %s\n' "$*" >&2
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

NODES=(us-1 us-2 eu-1 eu-2 ap-1 ap-2)
IMAGE=meridian:dev
STATE=.compose
READY_TIMEOUT=${READY_TIMEOUT:-120}
TEST_MAX_SECONDS=${TEST_MAX_SECONDS:-300}

for var in READY_TIMEOUT TEST_MAX_SECONDS; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer"
done

# The compose tool: the docker CLI plugin when present, else docker-compose (v1).
COMPOSE=()
find_compose() {
    command -v docker >/dev/null 2>&1 || die "docker is required"
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    else
        die "neither \`docker compose\` nor docker-compose is installed"
    fi
    # compose_test.py runs the same tool.
    export MERIDIAN_COMPOSE="${COMPOSE[*]}"
}

need_python() {
    command -v python3 >/dev/null 2>&1 || die "python3 is required"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
        die "python3 >= 3.9 is required ($(python3 --version 2>&1))"
}

# Prints the path of a static meridian, building it when needed.
static_binary() {
    if [[ -n ${MERIDIAN_STATIC_BIN:-} ]]; then
        [[ -x $MERIDIAN_STATIC_BIN ]] || die "MERIDIAN_STATIC_BIN=$MERIDIAN_STATIC_BIN is not an executable"
        echo "$MERIDIAN_STATIC_BIN"
        return
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo is required (or set MERIDIAN_STATIC_BIN)"
    local triple=${HOST_TRIPLE:-}
    if [[ -z $triple ]]; then
        triple=$(rustc -vV | sed -n 's/^host: //p')
    fi
    [[ $triple == *-linux-gnu ]] ||
        die "a static build needs a *-linux-gnu target, not '$triple' (set HOST_TRIPLE)"
    log "cargo build --release --target $triple -p meridian with +crt-static (a no-op when up to date)"
    # --target keeps these RUSTFLAGS off build scripts and proc macros, and the artifacts apart
    # from target/release.
    RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
        cargo build --release --target "$triple" -p meridian >&2 ||
        die "the static build failed"
    echo "target/$triple/release/meridian"
}

build_image() {
    local bin=$1
    # A dynamically linked binary would fail in the empty image with a bare "no such file".
    if command -v readelf >/dev/null 2>&1 && readelf -l "$bin" 2>/dev/null | grep -q 'INTERP'; then
        die "$bin is dynamically linked; build it with RUSTFLAGS='-C target-feature=+crt-static'"
    fi
    mkdir -p docker/build
    # Without its debug info (~90 MB -> ~20 MB; symbols stay for backtraces) when strip exists.
    if [[ ! -e docker/build/meridian || $bin -nt docker/build/meridian ]]; then
        if command -v strip >/dev/null 2>&1; then
            strip --strip-debug -o docker/build/meridian.tmp "$bin" || die "strip failed"
        else
            cp "$bin" docker/build/meridian.tmp
        fi
        mv -f docker/build/meridian.tmp docker/build/meridian
    fi
    local -a env=()
    # Without the buildx plugin, a recent docker CLI needs to be told to use the classic builder.
    docker buildx version >/dev/null 2>&1 || env=(env DOCKER_BUILDKIT=0)
    log "docker build -t $IMAGE (context docker/build)"
    "${env[@]}" docker build -q -f docker/Dockerfile -t "$IMAGE" docker/build >&2 ||
        die "docker build failed"
}

# Certificates, admin token and routing table, each created only when missing.
generate_config() {
    local bin=$1 id missing=()
    mkdir -p "$STATE/ca" "$STATE/tls" "$STATE/config"
    chmod 700 "$STATE/ca"
    for id in "${NODES[@]}"; do
        [[ -s $STATE/tls/$id/$id.key && -s $STATE/tls/$id/ca.pem ]] || missing+=("$id")
    done
    if ((${#missing[@]})); then
        local list
        list=$(
            IFS=,
            echo "${missing[*]}"
        )
        log "issuing certificates for $list ($STATE/ca, CA reused when present)"
        "$bin" certs --out "$STATE/ca" --nodes "$list" >&2 || die "meridian certs failed"
        for id in "${missing[@]}"; do
            mkdir -p "$STATE/tls/$id"
            cp "$STATE/ca/ca.pem" "$STATE/ca/$id.pem" "$STATE/ca/$id.key" "$STATE/tls/$id/"
            chmod 600 "$STATE/tls/$id/$id.key"
        done
    fi
    if [[ ! -s $STATE/config/admin-token ]]; then
        log "creating the admin token ($STATE/config/admin-token)"
        (
            umask 077
            od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$STATE/config/admin-token"
        )
    fi
    if [[ ! -s $STATE/config/routes.json ]]; then
        log "writing the first routing table ($STATE/config/routes.json)"
        cat >"$STATE/config/routes.json" <<'JSON'
{
  "services": {
    "echo": {
      "endpoints": {
        "us": ["http://up-us:9000"],
        "eu": ["http://up-eu:9000"],
        "ap": ["http://up-ap:9000"]
      },
      "health_check": { "path": "/healthz", "interval_ms": 1000, "timeout_ms": 500 },
      "timeout_ms": 5000,
      "retries": 2
    }
  },
  "routes": [
    { "name": "limited", "path_prefix": "/limited", "service": "echo", "quota": "per-tenant" },
    { "name": "all", "path_prefix": "/", "service": "echo" }
  ],
  "quotas": {
    "per-tenant": { "key": "header:x-tenant", "limit": 10, "window_ms": 1000, "on_partition": "local_share" }
  }
}
JSON
    fi
}

compose_test() {
    need_python
    python3 scripts/compose_test.py "$@"
}

cmd_up() {
    need_python
    local bin
    bin=$(static_binary)
    build_image "$bin"
    generate_config "$bin"
    log "${COMPOSE[*]} up -d"
    "${COMPOSE[@]}" up -d --remove-orphans >&2 || die "${COMPOSE[*]} up failed"
    compose_test ready --timeout "$READY_TIMEOUT" ||
        die "the cluster did not become ready; see: scripts/compose.sh logs"
    compose_test status
    cat <<EOF

us-1:   curl -i http://127.0.0.1:8080/hello
admin:  curl -H "Authorization: Bearer \$(cat $STATE/config/admin-token)" http://127.0.0.1:9901/cluster
        dashboard: http://127.0.0.1:9901/#token=<that token>; other nodes: scripts/compose.sh status
quota:  for i in \$(seq 15); do curl -s -o /dev/null -w '%{http_code} ' -H 'x-tenant: acme' \\
          http://127.0.0.1:8080/limited; done; echo      # 10/s per tenant across the cluster
logs:   scripts/compose.sh logs -f us-1      stop and remove everything: scripts/compose.sh down
EOF
}

# True when every service of docker-compose.yml has a running container.
all_running() {
    local want running
    want=$("${COMPOSE[@]}" config --services | wc -l)
    running=$("${COMPOSE[@]}" ps --services --filter status=running 2>/dev/null | wc -l)
    ((want > 0 && running == want))
}

cmd_down() {
    log "${COMPOSE[*]} down -v $*"
    "${COMPOSE[@]}" down -v --remove-orphans "$@" >&2 || die "${COMPOSE[*]} down failed"
    local left
    left=$("${COMPOSE[@]}" ps -q 2>/dev/null || true)
    [[ -z $left ]] || die "containers still present: $left"
}

cmd_test() {
    if all_running; then
        compose_test ready --timeout 60 ||
            die "the cluster is running but not ready; see: scripts/compose.sh logs"
    else
        log "the cluster is not (fully) running: bringing it up first"
        cmd_up
    fi
    local rc=0
    compose_test run --max-seconds "$TEST_MAX_SECONDS" "$@" || rc=$?
    case $rc in
    0) ;;
    130) exit 130 ;;
    3) exit 3 ;;
    *) exit 1 ;;
    esac
}

(($# >= 1)) || {
    usage >&2
    exit 2
}
command=$1
shift
case $command in
up)
    find_compose
    cmd_up
    ;;
down)
    find_compose
    cmd_down "$@"
    ;;
test)
    find_compose
    cmd_test "$@"
    ;;
status)
    find_compose
    compose_test status
    ;;
logs)
    find_compose
    exec "${COMPOSE[@]}" logs "$@"
    ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
