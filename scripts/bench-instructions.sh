#!/usr/bin/env bash
# bench-instructions.sh - user-space instructions per proxied request, Meridian next to nginx.
#
# Requests per second on a shared 2-core machine swing by 15-25 % between runs, more than the
# differences being chased. Instruction counts do not: valgrind's callgrind counts every
# instruction the proxy executes in user space, the same for the same binary and load whatever
# else the machine is doing. This script runs each proxy under callgrind in front of the same
# upstream (nginx answering `200 hello\n`, keep-alive), warms it up, zeroes the counters, drives
# it with wrk for DURATION seconds, and divides the instructions counted by the requests served.
#
# What it does not measure: system time (the kernel's share, which bench-proxy.sh reports per
# request) and anything that depends on timing, such as how many requests one wake-up serves.
# Under callgrind a proxy runs 20-50 times slower, so the load is light (CONNECTIONS, default 16).
#
# Usage: scripts/bench-instructions.sh
# Environment: DURATION (s, default 10), CONNECTIONS (default 16),
#   BENCH_BASE_PORT (default 19080), MERIDIAN_BIN (default target/release/meridian),
#   PROFILE_DIR (if set, each proxy's callgrind profile is kept there as NAME.callgrind, for
#   `callgrind_annotate --inclusive=yes DIR/meridian.callgrind`).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-bench.sh
source scripts/lib-bench.sh
export PATH="$PATH:/usr/sbin:/sbin"

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
BASE_PORT=${BENCH_BASE_PORT:-19080}
MERIDIAN_BIN=${MERIDIAN_BIN:-target/release/meridian}
[[ $DURATION =~ ^[1-9][0-9]*$ && $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "DURATION and CONNECTIONS must be positive integers"
[[ -x $MERIDIAN_BIN ]] || die "$MERIDIAN_BIN not found: cargo build --release -p meridian"
ensure_tools nginx:nginx wrk:wrk curl:curl valgrind:valgrind

bench_scratch meridian-instr

mapfile -t ports < <(free_ports "$BASE_PORT" 4)
((${#ports[@]} == 4)) || die "could not find 4 free ports from $BASE_PORT"
UP_PORT=${ports[0]} NGINX_PORT=${ports[1]} MERIDIAN_PORT=${ports[2]} ADMIN_PORT=${ports[3]}

write_proxy_configs "$UP_PORT" "$NGINX_PORT"
start_nginx upstream 1
wait_http "http://127.0.0.1:$UP_PORT/" 10 "$LAST_PID" "$TMP/upstream-error.log" || die "upstream nginx failed to start"

# measure NAME PORT CMD...: sets REQUESTS and INSTRUCTIONS for NAME. CMD runs straight under
# valgrind (not through a wrapper that execs it: callgrind would follow the wrapper only).
measure() {
    local name=$1 port=$2
    shift 2
    start_bg "$name" "$TMP/$name.log" taskset -c 0 valgrind --tool=callgrind \
        --callgrind-out-file="$TMP/$name.cg" "$@"
    local pid=$LAST_PID
    wait_http "http://127.0.0.1:$port/" 120 "$pid" "$TMP/$name.log" || die "$name failed to start under valgrind"
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d3 "http://127.0.0.1:$port/" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$port/" >"$TMP/$name.wrk"
    callgrind_control -d "$pid" >/dev/null 2>&1
    REQUESTS=$(awk '/requests in/ {print $1}' "$TMP/$name.wrk")
    INSTRUCTIONS=$(callgrind_annotate "$TMP/$name.cg.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    kill "$pid" 2>/dev/null || true
    if [[ -n ${PROFILE_DIR:-} ]]; then
        mkdir -p "$PROFILE_DIR" && cp "$TMP/$name.cg.1" "$PROFILE_DIR/$name.callgrind"
    fi
    [[ -n $REQUESTS && -n $INSTRUCTIONS && $REQUESTS -gt 0 ]] || die "$name: no figures (see $TMP/$name.log)"
}

log "nginx proxy under callgrind (${DURATION}s, $CONNECTIONS connections)"
# No master process: the process callgrind follows is the one doing the work.
measure nginx "$NGINX_PORT" nginx -p "$TMP" -e "$TMP/proxy-error.log" -c "$TMP/proxy.conf" \
    -g 'daemon off; master_process off;'
n_req=$REQUESTS n_ins=$INSTRUCTIONS
log "meridian under callgrind"
export MERIDIAN_WORKER_THREADS=1
measure meridian "$MERIDIAN_PORT" "$(realpath "$MERIDIAN_BIN")" node --id bench --region local \
    --http "127.0.0.1:$MERIDIAN_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    --routes "$TMP/routes.json" --log-level info --data-dir "$TMP/data"
m_req=$REQUESTS m_ins=$INSTRUCTIONS

n_per=$((n_ins / n_req))
m_per=$((m_ins / m_req))
printf '%-10s %10s %16s %18s\n' target requests instructions "instr/request"
printf '%-10s %10s %16s %18s\n' nginx "$n_req" "$n_ins" "$n_per"
printf '%-10s %10s %16s %18s\n' meridian "$m_req" "$m_ins" "$m_per"
printf 'meridian / nginx instructions per request: %s (lower is better)\n' "$(ratio "$m_per" "$n_per")"
