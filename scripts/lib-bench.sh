# shellcheck shell=bash
# Shared helpers for the Meridian benchmark scripts. Source it; do not run it.
#
# Conventions: progress and diagnostics go to stderr so that stdout carries
# only results (tables), which keeps `script > results.md` useful.

# PIDs of every long-running process we started; the EXIT trap kills them.
BENCH_PIDS=()

log() { printf '[bench] %s\n' "$*" >&2; }
warn() { printf '[bench] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[bench] ERROR: %s\n' "$*" >&2
    exit 1
}

# ensure_tools TOOL:PACKAGE...
# Installs missing tools through apt, but only as root: a non-root user gets a
# precise list of what to install instead of a sudo prompt in the middle of a run.
ensure_tools() {
    local spec tool pkg missing=()
    for spec in "$@"; do
        tool=${spec%%:*}
        pkg=${spec#*:}
        command -v "$tool" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0

    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        die "missing tools; install these packages first: ${missing[*]}"
    fi
    log "installing missing packages: ${missing[*]}"
    # A fresh machine may have empty apt lists, so refresh once before installing.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
        die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 ||
        die "apt-get install failed for: ${missing[*]}"
    for spec in "$@"; do
        command -v "${spec%%:*}" >/dev/null 2>&1 || die "${spec%%:*} still missing after install"
    done
}

# port_in_use PORT: true if something accepts connections on 127.0.0.1:PORT.
# Uses bash's /dev/tcp so it needs neither ss nor python on a minimal box.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_ports BASE COUNT: prints COUNT free ports >= BASE, one per line.
# There is a small race between checking and binding; servers that fail to
# bind are caught by wait_http, so a rerun is the remedy.
free_ports() {
    local port=$1 want=$2 found=0
    while ((found < want)); do
        ((port < $1 + 200 && port <= 65535)) || die "no $want free ports found from $1"
        if ! port_in_use "$port"; then
            echo "$port"
            found=$((found + 1))
        fi
        port=$((port + 1))
    done
}

# start_bg NAME LOGFILE CMD...: runs CMD in the background, records its PID.
# CMD should exec the server directly (taskset execs), so $! is the server.
start_bg() {
    local name=$1 logfile=$2
    shift 2
    "$@" >"$logfile" 2>&1 &
    BENCH_PIDS+=("$!")
    log "started $name (pid $!)"
    # shellcheck disable=SC2034 # read by the sourcing script
    LAST_PID=$!
}

# start_nginx NAME CPU: checks $TMP/NAME.conf, then runs nginx with it in the foreground of a
# background job pinned to CPU (start_bg). Everything nginx writes stays in TMP: -e sends its
# pre-config error log there too (default is /var/log/nginx).
start_nginx() {
    local name=$1 cpu=$2
    nginx -t -q -p "$TMP" -e "$TMP/$name-error.log" -c "$TMP/$name.conf" -g 'daemon off;' 2>"$TMP/$name-check.log" || {
        cat "$TMP/$name-check.log" >&2
        die "invalid nginx config for $name"
    }
    start_bg "nginx $name" "$TMP/$name.out" \
        taskset -c "$cpu" nginx -p "$TMP" -e "$TMP/$name-error.log" -c "$TMP/$name.conf" -g 'daemon off;'
}

# children PID: direct children of PID (e.g. nginx workers under the master).
# Read from /proc because procps (pgrep) is absent from minimal Debian images.
children() {
    cat /proc/"$1"/task/*/children 2>/dev/null || true
}

# proc_ticks PID...: "USER SYSTEM", the clock ticks (getconf CLK_TCK per second) these
# processes (all their threads) have run, from /proc/PID/stat fields 14 and 15, counted after the
# `(comm)` field, which may hold spaces. A process that has exited counts nothing.
proc_ticks() {
    local pid
    for pid in "$@"; do
        sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null || true
    done | awk '{ u += $12; s += $13 } END { printf "%d %d\n", u, s }'
}

# pin_tree CPU PID: moves a process, its threads and its children to CPU.
# taskset at launch is inherited by forked workers, but re-pinning a running
# nginx means touching the master and each worker explicitly.
pin_tree() {
    local cpu=$1 pid=$2 child
    taskset -a -pc "$cpu" "$pid" >/dev/null
    for child in $(children "$pid"); do
        taskset -a -pc "$cpu" "$child" >/dev/null
    done
}

# wait_http URL TIMEOUT_S PID LOGFILE: waits for a 2xx from URL.
# Fails fast if the server process died, rather than burning the whole timeout.
wait_http() {
    local url=$1 timeout=$2 pid=$3 logfile=$4
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            warn "process $pid exited before $url became ready; last log lines:"
            tail -n 20 "$logfile" >&2 || true
            return 1
        fi
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        sleep 0.2
    done
    warn "$url not ready after ${timeout}s; last log lines of $logfile:"
    tail -n 20 "$logfile" >&2 || true
    return 1
}

# run_client OUTFILE LIMIT_S CMD...: runs a load generator, hard-capped at
# LIMIT_S. It runs as a background job + wait (not in the foreground) so that
# a signal to the script is handled at once instead of after the whole run.
CLIENT_PID=""
run_client() {
    local out=$1 limit=$2 rc=0
    shift 2
    timeout "$limit" "$@" >"$out" &
    CLIENT_PID=$!
    wait "$CLIENT_PID" || rc=$?
    CLIENT_PID=""
    return "$rc"
}

# stop_all: TERM everything we started (children first, so nginx workers do
# not outlive a master that dies too fast), then KILL whatever is left.
stop_all() {
    local pid kids=() deadline
    if [[ -n $CLIENT_PID ]]; then
        kill -TERM "$CLIENT_PID" 2>/dev/null || true
    fi
    ((${#BENCH_PIDS[@]} == 0)) && return 0
    for pid in "${BENCH_PIDS[@]}"; do
        # shellcheck disable=SC2207
        kids+=($(children "$pid"))
    done
    for pid in "${BENCH_PIDS[@]}" "${kids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$((SECONDS + 3))
    for pid in "${BENCH_PIDS[@]}" "${kids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    BENCH_PIDS=()
}

# to_ms VALUE: converts a wrk duration ("301.00us", "1.20ms", "1.01s", "2.00m")
# to milliseconds with three decimals.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v; sub(/[a-z]+$/, "", n)
        u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") f = 0.001
        else if (u == "ms") f = 1
        else if (u == "s") f = 1000
        else if (u == "m") f = 60000
        else if (u == "h") f = 3600000
        else { print "nan"; exit }
        printf "%.3f", n * f
    }'
}

# parse_wrk FILE: prints "rps p50_ms p99_ms errors" from wrk --latency output.
# errors = socket errors + non-2xx/3xx responses: a proxy answering 502 quickly
# would otherwise look like a fast proxy.
parse_wrk() {
    local file=$1 rps p50 p99 errors
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$file")
    p50=$(awk '$1 == "50%" { print $2; exit }' "$file")
    p99=$(awk '$1 == "99%" { print $2; exit }' "$file")
    errors=$(awk '
        /Socket errors:/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { e += $NF }
        END { print e + 0 }' "$file")
    [[ -n $rps && -n $p50 && -n $p99 ]] || return 1
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") $errors"
}

# ratio A B: A/B with two decimals, "n/a" if either side is missing.
ratio() {
    if [[ -z ${1:-} || -z ${2:-} || $2 == "0" ]]; then
        echo "n/a"
    else
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
    fi
}

# cpu_ticks FILE: snapshots per-core busy/idle jiffies from /proc/stat.
# busy = user+nice+system+irq+softirq+steal, idle = idle+iowait.
cpu_ticks() {
    awk '/^cpu[0-9]+ / { print $1, $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat >"$1"
}

# cpu_busy BEFORE AFTER CPU: busy percentage of core CPU between two snapshots.
# Tells whether the target saturated its core and whether the client core
# (wrk + upstream) had headroom, i.e. whether the figure measures the target.
cpu_busy() {
    awk -v cpu="cpu$3" '
        FNR == NR { if ($1 == cpu) { b = $2; i = $3 }; next }
        $1 == cpu { db = $2 - b; di = $3 - i; printf "%.0f", (db + di) ? 100 * db / (db + di) : 0 }
    ' "$1" "$2"
}

# Make sure $MERIDIAN_BIN is there: build the default release binary when asked (--build) or when
# it is missing, never two release builds at once; warn when it is older than the sources or a
# debug build. Usage: ensure_meridian_bin BUILD (1 to rebuild).
ensure_meridian_bin() {
    local build=$1
    if ((build)) || [[ ! -x $MERIDIAN_BIN ]]; then
        [[ $MERIDIAN_BIN == target/release/meridian ]] ||
            die "$MERIDIAN_BIN is not an executable (only the default target/release/meridian is built here)"
        command -v cargo >/dev/null 2>&1 || die "$MERIDIAN_BIN missing and cargo not installed"
        # Two release builds at once on a small machine only slow each other down (and fight over
        # the target dir lock); let the running one finish instead.
        if pgrep -f "cargo build --release" >/dev/null 2>&1; then
            die "a release build is already running; rerun when it is done, or set MERIDIAN_BIN"
        fi
        log "building meridian (cargo build --release -p meridian)"
        cargo build --release -p meridian >&2 || die "cargo build failed"
        [[ -x $MERIDIAN_BIN ]] || die "$MERIDIAN_BIN not found after the build"
    fi
    # A binary older than the sources measures yesterday's code.
    local newer
    newer=$(find Cargo.toml Cargo.lock node raft-store gossip -newer "$MERIDIAN_BIN" \
        \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -print -quit 2>/dev/null || true)
    if [[ -n $newer ]]; then
        warn "$MERIDIAN_BIN is older than the sources (e.g. $newer); pass --build to rebuild first"
    fi
    if [[ $MERIDIAN_BIN == *debug* ]]; then
        warn "$MERIDIAN_BIN is a debug build: fine for checking the script, not for published figures"
    fi
}

# The flags every benchmark script with a Python helper takes: --markdown, --keep and
# --fail-on-miss go to the helper (in `py_args`), --build sets `build=1`, --help prints the calling
# script's header comment.
parse_bench_args() {
    build=0
    py_args=()
    local arg
    for arg in "$@"; do
        case $arg in
        --markdown | --keep | --fail-on-miss) py_args+=("$arg") ;;
        --build) build=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $arg (see --help)" ;;
        esac
    done
}

# bench_scratch PREFIX: makes the scratch directory TMP (readable by nginx workers, which drop to
# `nobody` when started as root) and stops every started server and removes TMP on exit.
bench_scratch() {
    TMP=$(mktemp -d -t "$1.XXXXXX")
    chmod 755 "$TMP"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
bench_cleanup() {
    local rc=$?
    stop_all
    rm -rf "$TMP"
    exit "$rc"
}

# The shared set-up of the HTTP benchmarks, everything nginx writes kept in TMP (no root, nothing
# under /var): nginx_common and nginx_http_common print the common parts of a config.
nginx_common() {
    local name=$1
    cat <<EOF
worker_processes 1;
pid $TMP/$name.pid;
error_log $TMP/$name-error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() {
    local name=$1
    cat <<EOF
    access_log off;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/$name-body;
    proxy_temp_path $TMP/$name-proxy;
    fastcgi_temp_path $TMP/$name-fastcgi;
    uwsgi_temp_path $TMP/$name-uwsgi;
    scgi_temp_path $TMP/$name-scgi;
EOF
}

# write_upstream_config UP_PORT: $TMP/upstream.conf, nginx answering `200 hello\n` on UP_PORT.
write_upstream_config() {
    local UP_PORT=$1
    {
        nginx_common upstream
        echo "http {"
        nginx_http_common upstream
        cat <<EOF
    server {
        listen 127.0.0.1:$UP_PORT;
        location / {
            default_type text/plain;
            return 200 "hello\n";
        }
    }
}
EOF
    } >"$TMP/upstream.conf"
}

# write_proxy_configs UP_PORT NGINX_PORT [SAME_HEADERS]: $TMP/upstream.conf (nginx answering
# `200 hello\n` on UP_PORT), $TMP/proxy.conf (nginx proxying NGINX_PORT to it, with upstream
# keep-alive) and $TMP/routes.json (one Meridian route to it). With SAME_HEADERS=1 the nginx proxy
# also does the header work Meridian always does (forwarding fields and a request id upstream, a
# request id and two node-naming fields on every response).
write_proxy_configs() {
    local UP_PORT=$1 NGINX_PORT=$2 SAME_HEADERS=${3:-0} headers=""
    if ((SAME_HEADERS)); then
        headers='
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-Id $request_id;
            add_header X-Request-Id $request_id always;
            add_header X-Meridian-Node bench always;
            add_header X-Meridian-Region local always;'
    fi
    write_upstream_config "$UP_PORT"

    {
        nginx_common proxy
        echo "http {"
        nginx_http_common proxy
        cat <<EOF
    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";$headers
        }
    }
}
EOF
    } >"$TMP/proxy.conf"
    cat >"$TMP/routes.json" <<EOF
{ "services": { "nginx": { "endpoints": { "local": ["http://127.0.0.1:$UP_PORT"] }, "timeout_ms": 5000, "retries": 1 } },
  "routes": [ { "name": "all", "path_prefix": "/", "service": "nginx" } ] }
EOF
}
