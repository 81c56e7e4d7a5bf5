#!/usr/bin/env bash
# bench-proxy.sh - what does a hop through Meridian cost, next to nginx and HAProxy?
#
# One run measures the same upstream (nginx answering `200 hello\n`, keep-alive)
#   1. direct            wrk -> upstream
#   2. nginx-proxy       wrk -> nginx  (upstream keepalive, HTTP/1.1) -> upstream
#   3. haproxy           wrk -> haproxy (http mode, keep-alive, http-reuse) -> upstream
#   4. meridian          wrk -> meridian node (1 tokio worker) -> upstream
# and prints req/s, p50 and p99 per target plus ratios against direct and nginx.
#
# CPU placement (needs >= 2 cores), chosen so every target under test gets the
# same budget - one whole core - and the load generator never steals from it:
#   core 0: the server under test, alone (nginx worker_processes 1,
#           haproxy nbthread 1, meridian MERIDIAN_WORKER_THREADS=1).
#   core 1: wrk (-t1) and the upstream nginx. Pinning the upstream to core 0
#           instead would make every proxy share its core with the upstream
#           and measure the pair, not the proxy. The price: at proxy rates
#           core 1 runs close to full too, so the report shows per-core busy %
#           and warns when core 0 had idle time while core 1 was saturated
#           (i.e. the figure is client-bound rather than a property of the target).
#   direct: here the upstream *is* the server under test, so it is moved to
#           core 0 for that run only (taskset -p) and moved back afterwards;
#           otherwise the baseline would be wrk and nginx fighting over core 1
#           and "ratio vs direct" would be meaningless.
# Keep-alive request caps are lifted everywhere (nginx defaults to 1000
# requests per connection) so no target pays for reconnects the others avoid.
#
# Rounds: run-to-run noise on a shared 2-core machine (+-15%) is larger than the
# differences being measured, so the three proxies are measured ROUNDS times,
# interleaved (the order rotates each round), and the table shows each one's
# median. Each round also prints the proxy's CPU time per request (user and
# system, from /proc of its processes), which varies far less than req/s and
# says where a gap comes from.
#
# Usage: scripts/bench-proxy.sh [--markdown] [--build] [--skip-meridian]
#   --markdown       also print the results as a markdown table (docs/benchmarks.md)
#   --build          (re)build meridian with cargo before running
#   --skip-meridian  measure only direct / nginx / haproxy
#   --same-headers   make nginx and HAProxy do the header work Meridian always does: send
#                    x-forwarded-for, x-forwarded-proto and a generated x-request-id upstream,
#                    and add x-request-id and two node-naming fields to every response. By
#                    default they forward the request as it came and add nothing.
# Environment: DURATION (s, default 10), CONNECTIONS (default 64),
#   WARMUP (s, default 2), ROUNDS (default 3), BENCH_BASE_PORT (default 18080),
#   MERIDIAN_BIN (default target/release/meridian).
# Total run time is about (1 + 3 x ROUNDS) x (WARMUP + DURATION) s plus a few
# seconds of startup.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-bench.sh
source scripts/lib-bench.sh

# nginx and haproxy live in /usr/sbin, which is not on a normal user's PATH.
export PATH="$PATH:/usr/sbin:/sbin"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
WARMUP=${WARMUP:-2}
BASE_PORT=${BENCH_BASE_PORT:-18080}
MERIDIAN_BIN=${MERIDIAN_BIN:-target/release/meridian}
SERVER_CPU=0
CLIENT_CPU=1

markdown=0
build=0
SAME_HEADERS=0
skip_meridian=0
skip_reason=""
for arg in "$@"; do
    case $arg in
    --markdown) markdown=1 ;;
    --build) build=1 ;;
    --skip-meridian) skip_meridian=1 skip_reason="--skip-meridian given" ;;
    --same-headers) SAME_HEADERS=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $arg (see --help)" ;;
    esac
done

[[ $DURATION =~ ^[0-9]+$ && $WARMUP =~ ^[0-9]+$ && $CONNECTIONS =~ ^[0-9]+$ && $ROUNDS =~ ^[1-9][0-9]*$ ]] ||
    die "DURATION, WARMUP, CONNECTIONS and ROUNDS must be integers (ROUNDS >= 1)"
(($(nproc) >= 2)) || die "needs at least 2 CPU cores (server and load generator are pinned apart)"

ensure_tools nginx:nginx haproxy:haproxy wrk:wrk curl:curl taskset:util-linux

# --- meridian binary -------------------------------------------------------
if ((!skip_meridian)); then
    if ((build)) || [[ ! -x $MERIDIAN_BIN ]]; then
        if command -v cargo >/dev/null 2>&1; then
            log "building meridian (cargo build --release -p meridian)"
            cargo build --release -p meridian >&2 || die "cargo build failed"
        else
            skip_meridian=1
            skip_reason="$MERIDIAN_BIN missing and cargo not installed"
        fi
    fi
    if ((!skip_meridian)) && [[ ! -x $MERIDIAN_BIN ]]; then
        skip_meridian=1
        skip_reason="$MERIDIAN_BIN not found after build"
    fi
fi
if ((skip_meridian)); then
    warn "skipping meridian: $skip_reason"
fi

# --- scratch space and cleanup ---------------------------------------------
bench_scratch meridian-bench

# Both cores are fully used by the benchmark, so any other work (a cargo build,
# a test run) lands straight in the figures. Sample the cores for a second
# rather than trusting the load average, which lags (and still counts a
# previous benchmark run for a minute afterwards).
cpu_ticks "$TMP/idle.0"
sleep 1
cpu_ticks "$TMP/idle.1"
for cpu in "$SERVER_CPU" "$CLIENT_CPU"; do
    busy=$(cpu_busy "$TMP/idle.0" "$TMP/idle.1" "$cpu")
    if ((busy > 15)); then
        warn "core $cpu is already ${busy}% busy before the benchmark: other work is running, expect noisy figures"
    fi
done

mapfile -t ports < <(free_ports "$BASE_PORT" 5)
# free_ports runs in a subshell, so its die cannot stop us; check the count.
((${#ports[@]} == 5)) || die "could not find 5 free ports from $BASE_PORT"
UP_PORT=${ports[0]} NGINX_PORT=${ports[1]} HAPROXY_PORT=${ports[2]}
MERIDIAN_PORT=${ports[3]} ADMIN_PORT=${ports[4]}
log "ports: upstream=$UP_PORT nginx=$NGINX_PORT haproxy=$HAPROXY_PORT meridian=$MERIDIAN_PORT admin=$ADMIN_PORT"

# --- configs ---------------------------------------------------------------
write_proxy_configs "$UP_PORT" "$NGINX_PORT" "$SAME_HEADERS"

haproxy_headers=""
if ((SAME_HEADERS)); then
    # The same header work as Meridian's, in HAProxy's words.
    haproxy_headers='
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
    http-request set-header X-Request-Id %[unique-id]
    http-response set-header X-Request-Id %[unique-id]
    http-response set-header X-Meridian-Node bench
    http-response set-header X-Meridian-Region local'
fi
# http-reuse always matches nginx's keepalive pool: any idle upstream
# connection may serve any client.
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be$haproxy_headers

backend be
    server upstream 127.0.0.1:$UP_PORT maxconn 1000
EOF


# --- servers ---------------------------------------------------------------
start_nginx upstream "$CLIENT_CPU"
UP_PID=$LAST_PID
wait_http "http://127.0.0.1:$UP_PORT/" 10 "$UP_PID" "$TMP/upstream-error.log" || die "upstream nginx failed to start"

start_nginx proxy "$SERVER_CPU"
NGINX_PID=$LAST_PID
wait_http "http://127.0.0.1:$NGINX_PORT/" 10 "$NGINX_PID" "$TMP/proxy-error.log" || die "nginx proxy failed to start"

haproxy -c -q -f "$TMP/haproxy.cfg" >&2 || die "invalid haproxy config"
start_bg haproxy "$TMP/haproxy.log" taskset -c "$SERVER_CPU" haproxy -db -f "$TMP/haproxy.cfg"
HAPROXY_PID=$LAST_PID
wait_http "http://127.0.0.1:$HAPROXY_PORT/" 10 "$HAPROXY_PID" "$TMP/haproxy.log" || die "haproxy failed to start"

if ((!skip_meridian)); then
    # Run from TMP: the node keeps durable state under ./meridian-data/ID by
    # default, which must not land in the repo.
    start_bg meridian "$TMP/meridian.log" \
        env -C "$TMP" MERIDIAN_WORKER_THREADS=1 taskset -c "$SERVER_CPU" "$(realpath "$MERIDIAN_BIN")" node \
        --id bench --region local \
        --http "127.0.0.1:$MERIDIAN_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
        --routes "$TMP/routes.json" --log-level info
    MERIDIAN_PID=$LAST_PID
    wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" 20 "$MERIDIAN_PID" "$TMP/meridian.log" ||
        die "meridian did not become ready (see log above)"
fi

# --- measurements ----------------------------------------------------------
# Per target: every round's figures (LIST_*, space-separated, in round order),
# then, once all rounds are done, the median round's (RPS P50 P99 ...).
declare -A RPS P50 P99 ERRS CPU_S CPU_C LIST_RPS LIST_P50 LIST_P99 LIST_ERRS LIST_CPU_S LIST_CPU_C LIST_US
TARGETS=()

# bench NAME URL PID: sanity-checks the body, warms up, then runs the measured
# wrk; appends this round's figures to the target's lists.
bench() {
    local name=$1 url=$2 pid=$3 body out u0 s0 u1 s1 rps p50 p99 errs hz cpu_s cpu_c us requests pids
    # A proxy that answers the wrong thing (404, 502) fast must not pass as fast.
    body=$(curl -fsS --max-time 2 "$url") || die "$name: request to $url failed"
    [[ $body == hello ]] || die "$name: unexpected body from $url: '$body'"

    log "$name: warmup ${WARMUP}s"
    # The run_client limit is only a guard: wrk's own -d bounds the run.
    run_client /dev/null $((WARMUP + 15)) taskset -c "$CLIENT_CPU" \
        wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "$url"
    log "$name: measuring ${DURATION}s"
    out="$TMP/wrk-$name.txt"
    cpu_ticks "$TMP/cpu-before"
    # The target's processes: nginx's master and workers, or the one process.
    # shellcheck disable=SC2207 # PIDs, one per word
    pids=("$pid" $(children "$pid"))
    read -r u0 s0 < <(proc_ticks "${pids[@]}")
    run_client "$out" $((DURATION + 15)) taskset -c "$CLIENT_CPU" \
        wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url"
    read -r u1 s1 < <(proc_ticks "${pids[@]}")
    cpu_ticks "$TMP/cpu-after"
    cpu_s=$(cpu_busy "$TMP/cpu-before" "$TMP/cpu-after" "$SERVER_CPU")
    cpu_c=$(cpu_busy "$TMP/cpu-before" "$TMP/cpu-after" "$CLIENT_CPU")
    read -r rps p50 p99 errs < <(parse_wrk "$out") || {
        cat "$out" >&2
        die "$name: could not parse wrk output"
    }
    # CPU time per request, microseconds, as "user+system".
    hz=$(getconf CLK_TCK)
    requests=$(awk '/ requests in / { print $1 }' "$out")
    us=$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" -v n="${requests:-0}" \
        'BEGIN { if (n > 0) printf "%.1f+%.1f", u / hz * 1e6 / n, s / hz * 1e6 / n; else print "n/a" }')
    log "$name: $rps req/s, p99 $p99 ms, CPU per request ${us} us (user+system)"
    # Both cores near 100% is the normal balanced state on 2 cores. But idle
    # time on the target's core while the client core is saturated means wrk
    # (+ upstream) limited this figure, not the target; say so.
    if ((cpu_c >= 90 && cpu_s < 90)); then
        warn "$name: core $SERVER_CPU only ${cpu_s}% busy while client core $CLIENT_CPU was ${cpu_c}%; figure is likely client-bound"
    fi
    [[ $errs == 0 ]] || warn "$name: $errs errors (socket errors or non-2xx), see numbers with care"
    LIST_RPS[$name]+="$rps "
    LIST_P50[$name]+="$p50 "
    LIST_P99[$name]+="$p99 "
    LIST_ERRS[$name]+="$errs "
    LIST_CPU_S[$name]+="$cpu_s "
    LIST_CPU_C[$name]+="$cpu_c "
    LIST_US[$name]+="$us "
    [[ " ${TARGETS[*]} " == *" $name "* ]] || TARGETS+=("$name")
}

# pick_median_round NAME: fills RPS P50 P99 ERRS CPU_S CPU_C of NAME from its
# round with the median req/s (all rounds done).
pick_median_round() {
    local name=$1 m i=0 v
    local -a rps p50 p99 errs cpu_s cpu_c
    m=$(median "${LIST_RPS[$name]}")
    read -r -a rps <<<"${LIST_RPS[$name]}"
    read -r -a p50 <<<"${LIST_P50[$name]}"
    read -r -a p99 <<<"${LIST_P99[$name]}"
    read -r -a errs <<<"${LIST_ERRS[$name]}"
    read -r -a cpu_s <<<"${LIST_CPU_S[$name]}"
    read -r -a cpu_c <<<"${LIST_CPU_C[$name]}"
    for v in "${rps[@]}"; do
        [[ $v == "$m" ]] && break
        i=$((i + 1))
    done
    RPS[$name]=${rps[$i]} P50[$name]=${p50[$i]} P99[$name]=${p99[$i]}
    ERRS[$name]=${errs[$i]} CPU_S[$name]=${cpu_s[$i]} CPU_C[$name]=${cpu_c[$i]}
}

# median LIST: the median of whitespace-separated numbers (lower middle for an
# even count).
median() {
    tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# The upstream is the target for the direct run, so give it core 0 meanwhile.
pin_tree "$SERVER_CPU" "$UP_PID"
bench direct "http://127.0.0.1:$UP_PORT/" "$UP_PID"
pin_tree "$CLIENT_CPU" "$UP_PID"

PROXIES=(nginx-proxy haproxy)
((skip_meridian)) || PROXIES+=(meridian)
declare -A URL_OF=([nginx-proxy]="http://127.0.0.1:$NGINX_PORT/" [haproxy]="http://127.0.0.1:$HAPROXY_PORT/"
    [meridian]="http://127.0.0.1:$MERIDIAN_PORT/")
declare -A PID_OF=([nginx-proxy]="$NGINX_PID" [haproxy]="$HAPROXY_PID" [meridian]="${MERIDIAN_PID:-}")
ROUND_RATIOS=()
for ((round = 0; round < ROUNDS; round++)); do
    log "round $((round + 1)) of $ROUNDS"
    # Rotate the order so no proxy always runs first (or last) in a round.
    for ((i = 0; i < ${#PROXIES[@]}; i++)); do
        t=${PROXIES[$(((i + round) % ${#PROXIES[@]}))]}
        bench "$t" "${URL_OF[$t]}" "${PID_OF[$t]}"
    done
    if ((!skip_meridian)); then
        read -r -a m_rps <<<"${LIST_RPS[meridian]}"
        read -r -a n_rps <<<"${LIST_RPS[nginx-proxy]}"
        ROUND_RATIOS+=("$(ratio "${m_rps[$round]}" "${n_rps[$round]}")")
    fi
done

for t in "${TARGETS[@]}"; do
    pick_median_round "$t"
done

# --- report ----------------------------------------------------------------
echo
echo "Median of $ROUNDS round(s) per proxy (direct: one run); CPU us/request = user+system of the target's processes."
printf '%-12s %10s %8s %8s %10s %9s %7s %7s %7s  %s\n' target "req/s" "p50 ms" "p99 ms" "vs direct" "vs nginx" errors \
    "cpu$SERVER_CPU%" "cpu$CLIENT_CPU%" "CPU us/request by round"
for t in "${TARGETS[@]}"; do
    printf '%-12s %10.0f %8.3f %8.3f %10s %9s %7s %7s %7s  %s\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" \
        "$(ratio "${RPS[$t]}" "${RPS[direct]}")" "$(ratio "${RPS[$t]}" "${RPS[nginx-proxy]}")" "${ERRS[$t]}" \
        "${CPU_S[$t]}" "${CPU_C[$t]}" "${LIST_US[$t]}"
done
if ((skip_meridian)); then
    printf '%-12s %10s   (skipped: %s)\n' meridian - "$skip_reason"
fi
echo

if ((skip_meridian)); then
    echo "meridian/nginx throughput ratio: n/a  (meridian skipped: $skip_reason)"
else
    printf 'meridian/nginx throughput ratio: %s median (rounds: %s); p99 median meridian %.3f ms vs nginx %.3f ms\n' \
        "$(median "${ROUND_RATIOS[*]}")" "${ROUND_RATIOS[*]}" "$(median "${LIST_P99[meridian]}")" \
        "$(median "${LIST_P99[nginx-proxy]}")"
fi
if ((SAME_HEADERS)); then
    echo "nginx and HAProxy did Meridian's header work too (--same-headers)."
else
    echo "nginx and HAProxy forwarded requests as they came and added no fields; Meridian did its header work (--same-headers evens that out)."
fi

if ((markdown)); then
    cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo
    echo "Measured $(date -u +%Y-%m-%d) on ${cpu_model:-unknown CPU}; $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v | awk 'NR == 1 { print "HAProxy " $3 }')."
    echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s after a ${WARMUP}s warmup, $ROUNDS interleaved round(s), median round shown; server under test alone on core 0, wrk + upstream on core 1."
    echo
    echo "| target | req/s | p50 ms | p99 ms | vs direct | vs nginx | errors | core $SERVER_CPU busy | core $CLIENT_CPU busy | CPU us/request (user+sys), by round |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for t in "${TARGETS[@]}"; do
        printf '| %s | %.0f | %.3f | %.3f | %s | %s | %s | %s%% | %s%% | %s |\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" \
            "$(ratio "${RPS[$t]}" "${RPS[direct]}")" "$(ratio "${RPS[$t]}" "${RPS[nginx-proxy]}")" "${ERRS[$t]}" \
            "${CPU_S[$t]}" "${CPU_C[$t]}" "${LIST_US[$t]}"
    done
    if ((skip_meridian)); then
        echo "| meridian | skipped | | | | | | | | |"
    fi
fi
