#!/usr/bin/env bash
# bench-tls.sh - what does terminating TLS in Meridian cost next to nginx, and what does a JWT add?
#
# One run, one upstream (nginx answering `200 hello\n`, keep-alive, as in bench-proxy.sh), reached
# through one nginx (worker_processes 1, upstream keep-alive) and one Meridian node (1 tokio worker),
# each listening for plain HTTP and for HTTPS. Prints each figure next to its target with PASS/MISS:
#   1. TLS termination, wrk over https (rows nginx-tls, meridian-tls):
#      - keep-alive (the figure that matters): Meridian / nginx req/s            target >= 1.0
#                                              Meridian / nginx p99              target <= 1.0
#      - a new connection and a full handshake per request (`Connection: close`; rows *-tls-close):
#        the same ratios and the servers' CPU per request (= per handshake), no target: wrk's half of
#        each handshake (OpenSSL 3) runs on the load core and usually bounds req/s there
#      - plain HTTP through the same two processes (rows *-http): what TLS itself costs each side.
#      Same certificate and key on both sides (ECDSA P-256, self-signed by openssl for
#      bench.meridian.test and localhost; Meridian reads it from --https-cert-dir as the pair
#      default.pem / default.key). Same TLS: 1.3, TLS_AES_128_GCM_SHA256, X25519.
#      wrk (OpenSSL) offers only that suite and group, through an OPENSSL_CONF file; nginx is pinned
#      to them too (ssl_protocols, ssl_conf_command Ciphersuites, ssl_ecdh_curve); rustls in
#      Meridian can only answer with what the client offers. Before measuring, `openssl s_client`
#      with the same OPENSSL_CONF shakes hands with each side and the run stops unless both
#      negotiate that protocol, suite, group and certificate. No ALPN is offered (wrk sends none):
#      HTTP/1.1 on both sides. wrk connects to https://localhost:PORT, so SNI is `localhost`.
#   2. JWT cost end to end: the same Meridian node over plain HTTP, three routes to the same upstream
#      that differ only in `auth`: none (meridian-http), JWT HS256 and JWT ES256 (issuer and audience
#      checked; tokens signed with openssl, sent as `authorization: Bearer`). req/s against no auth,
#      and the added us per request two ways: the node's own CPU time per request (below) minus that
#      of no auth, and 1e6/rps(jwt) - 1e6/rps(none), wall time per request, which only means the
#      same when the node's core is the bottleneck (the core-busy columns say). No target.
#   Every row also shows the server's CPU time per request (/proc/PID/stat of nginx's master and
#   worker, or of the Meridian process, around the measured run, over the requests wrk counted): on
#   two cores where wrk and the upstream saturate core 1, req/s alone can hide what the target costs.
#   And the share of core 0 that went to other processes or to the hypervisor (steal) meanwhile:
#   a build or test run of someone else lands there, and the script warns above 10%.
#   3. JWT cost per check (node/examples/jwt_bench.rs, `cargo run --release -p meridian --example
#      jwt_bench`): ns per request of the route's auth check (`meridian::auth::admit`), one thread,
#      for no auth, API key, JWT HS256, RS256, ES256, and of the signature check alone. No target.
#
# CPU placement as in bench-proxy.sh (needs >= 2 cores): the nginx proxy and the Meridian node alone
# on core 0, wrk (-t1) and the upstream on core 1; the microbenchmark on core 0 once wrk is done.
#
# Usage: scripts/bench-tls.sh [--markdown] [--build] [--keep] [--fail-on-miss]
#   --markdown      also print the results as markdown tables (docs/benchmarks.md)
#   --build         (re)build meridian and the jwt_bench example (cargo build --release) first;
#                   only the default MERIDIAN_BIN is built here
#   --keep          keep the scratch dir with the configs, certificate, logs and wrk outputs
#                   (always kept when the run fails)
#   --fail-on-miss  exit 3 when a figure misses its target (default: exit 0 once measured)
# Environment: MERIDIAN_BIN (default target/release/meridian; it must have `node --https ADDR
#   --https-cert-dir DIR` for the TLS rows, which are otherwise reported as not measured),
#   DURATION (s per row, default 10), WARMUP (s per row, default 2), CONNECTIONS (default 64),
#   JWT_BENCH_SECONDS (per microbenchmark case, default 1), BENCH_BASE_PORT (default 18180),
#   MAX_SECONDS (hard limit for the whole run, builds excluded, default 300).
# Exit status: 0 measured, 1 a figure could not be measured (scratch dir kept), 3 see
#   --fail-on-miss, 130/143 interrupted or stopped by MAX_SECONDS. Results go to stdout, progress
#   to stderr.
# Runs in about 8 x (WARMUP + DURATION) + 9 x JWT_BENCH_SECONDS s plus a few seconds of startup
# (about 2 minutes by default). Every wait is bounded: servers get 10-20 s to answer, each wrk run
# DURATION + 15 s, the microbenchmark 9 x JWT_BENCH_SECONDS + 30 s, and a watchdog ends the run
# after MAX_SECONDS. Every process is started here and stopped by PID on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-bench.sh
source scripts/lib-bench.sh

# nginx lives in /usr/sbin, which is not on a normal user's PATH.
export PATH="$PATH:/usr/sbin:/sbin"

MERIDIAN_BIN=${MERIDIAN_BIN:-target/release/meridian}
JWT_BENCH=target/release/examples/jwt_bench
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
JWT_BENCH_SECONDS=${JWT_BENCH_SECONDS:-1}
BASE_PORT=${BENCH_BASE_PORT:-18180}
MAX_SECONDS=${MAX_SECONDS:-300}
SERVER_CPU=0
CLIENT_CPU=1
# What both sides must negotiate (checked with s_client before any measurement).
TLS_PROTOCOL=TLSv1.3
TLS_SUITE=TLS_AES_128_GCM_SHA256
TLS_GROUP=X25519
TLS_NAME=localhost

parse_bench_args "$@"
markdown=0 keep=0 fail_on_miss=0
for arg in "${py_args[@]}"; do
    case $arg in
    --markdown) markdown=1 ;;
    --keep) keep=1 ;;
    --fail-on-miss) fail_on_miss=1 ;;
    esac
done

for var in DURATION CONNECTIONS MAX_SECONDS; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number of seconds"
[[ $JWT_BENCH_SECONDS =~ ^[0-9]+([.][0-9]+)?$ ]] || die "JWT_BENCH_SECONDS must be a number of seconds"
(($(nproc) >= 2)) || die "needs at least 2 CPU cores (server and load generator are pinned apart)"

ensure_tools nginx:nginx wrk:wrk curl:curl taskset:util-linux openssl:openssl

# --- binaries ----------------------------------------------------------------
# A binary from another worktree (the TLS branch's, say) is checked for being executable only:
# the staleness check in ensure_meridian_bin compares it with this worktree's sources.
if [[ $(realpath -m "$MERIDIAN_BIN") == "$PWD"/target/* ]]; then
    ensure_meridian_bin "$build"
else
    ((build)) && die "--build builds only the default target/release/meridian; build $MERIDIAN_BIN where its sources are"
    [[ -x $MERIDIAN_BIN ]] || die "$MERIDIAN_BIN is not an executable"
fi
if ((build)) || [[ ! -x $JWT_BENCH ]]; then
    command -v cargo >/dev/null 2>&1 || die "$JWT_BENCH missing and cargo not installed"
    log "building the JWT microbenchmark (cargo build --release -p meridian --example jwt_bench)"
    cargo build --release -p meridian --example jwt_bench >&2 || die "cargo build of the jwt_bench example failed"
fi
MERIDIAN_BIN=$JWT_BENCH ensure_meridian_bin 0 # staleness and debug-build warnings only

meridian_tls=1
tls_skip_reason=""
if ! "$MERIDIAN_BIN" node --help 2>/dev/null | grep -q -- '--https-cert-dir'; then
    meridian_tls=0
    tls_skip_reason="$MERIDIAN_BIN has no --https/--https-cert-dir (build the data-plane TLS branch)"
    warn "meridian TLS rows not measured: $tls_skip_reason"
fi

# --- scratch space, cleanup, time limit -------------------------------------
TMP=$(mktemp -d -t meridian-bench-tls.XXXXXX)
# nginx workers drop to `nobody` when started as root; they must reach their temp dirs inside TMP.
chmod 755 "$TMP"
unmeasured=0
WATCHDOG_PID=""
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local rc=$?
    stop_all
    if [[ -n $WATCHDOG_PID ]]; then
        # shellcheck disable=SC2046 # one PID per word
        kill $(children "$WATCHDOG_PID") "$WATCHDOG_PID" 2>/dev/null || true
    fi
    if ((rc != 0 && rc != 3)) || ((keep || unmeasured)); then
        log "scratch dir kept: $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The watchdog is not in BENCH_PIDS, and disowned: stop_all, which ends the servers before the
# microbenchmark, must neither end it nor wait for it. cleanup ends it and its sleep.
bash -c 'sleep "$1"; echo "[bench] ERROR: time limit of $1 s reached, stopping" >&2; kill -TERM "$2"' \
    _ "$MAX_SECONDS" "$$" &
WATCHDOG_PID=$!
disown "$WATCHDOG_PID"

# Both cores are fully used by the benchmark, so any other work (a cargo build, a test run) lands
# straight in the figures. Sample the cores for a second rather than trusting the load average.
cpu_ticks "$TMP/idle.0"
sleep 1
cpu_ticks "$TMP/idle.1"
for cpu in "$SERVER_CPU" "$CLIENT_CPU"; do
    busy=$(cpu_busy "$TMP/idle.0" "$TMP/idle.1" "$cpu")
    if ((busy > 15)); then
        warn "core $cpu is already ${busy}% busy before the benchmark: other work is running, expect noisy figures"
    fi
done
BUSY_BEFORE="$(cpu_busy "$TMP/idle.0" "$TMP/idle.1" "$SERVER_CPU")% / $(cpu_busy "$TMP/idle.0" "$TMP/idle.1" "$CLIENT_CPU")%"

mapfile -t ports < <(free_ports "$BASE_PORT" 6)
((${#ports[@]} == 6)) || die "could not find 6 free ports from $BASE_PORT"
UP_PORT=${ports[0]} NGINX_PORT=${ports[1]} NGINX_TLS_PORT=${ports[2]}
MERIDIAN_PORT=${ports[3]} MERIDIAN_TLS_PORT=${ports[4]} ADMIN_PORT=${ports[5]}
log "ports: upstream=$UP_PORT nginx=$NGINX_PORT nginx-tls=$NGINX_TLS_PORT" \
    "meridian=$MERIDIAN_PORT meridian-tls=$MERIDIAN_TLS_PORT admin=$ADMIN_PORT"

# --- certificate, client TLS settings, tokens --------------------------------
CERT_DIR=$TMP/certs
mkdir -p "$CERT_DIR"
# One pair, `default`: Meridian serves it for its names and to clients whose SNI matches no pair.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -keyout "$CERT_DIR/default.key" -out "$CERT_DIR/default.pem" -subj "/CN=bench.meridian.test" \
    -addext "subjectAltName=DNS:bench.meridian.test,DNS:localhost" 2>"$TMP/openssl-req.log" ||
    die "openssl could not make the certificate: $(cat "$TMP/openssl-req.log")"
chmod 600 "$CERT_DIR/default.key"
CERT=$CERT_DIR/default.pem
CERT_FP=$(openssl x509 -in "$CERT" -noout -fingerprint -sha256 | sed 's/.*=//')
# curl (readiness and body checks) trusts exactly this certificate.
export CURL_CA_BUNDLE=$CERT

# OpenSSL reads this at start-up (wrk, s_client): the client offers one protocol, suite and group.
CLIENT_TLS_CONF=$TMP/client-openssl.cnf
cat >"$CLIENT_TLS_CONF" <<EOF
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = tls_pinned
[tls_pinned]
MinProtocol = $TLS_PROTOCOL
MaxProtocol = $TLS_PROTOCOL
Ciphersuites = $TLS_SUITE
Groups = $TLS_GROUP
EOF

# JWTs signed by openssl (another implementation than the node's), valid for an hour.
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
ISSUER=https://issuer.bench.test
AUDIENCE=api
now=$(date +%s)
CLAIMS="{\"sub\":\"client-42\",\"iss\":\"$ISSUER\",\"aud\":\"$AUDIENCE\",\"iat\":$now,\"exp\":$((now + 3600))}"
jwt_input() { # ALG KID -> header.payload
    printf '%s.%s' "$(printf '{"alg":"%s","typ":"JWT","kid":"%s"}' "$1" "$2" | b64url)" \
        "$(printf '%s' "$CLAIMS" | b64url)"
}
HS_SECRET_HEX=$(openssl rand -hex 32)
# hex_bytes HEX: the bytes HEX spells (through printf's \xHH escapes; NULs are fine in a pipe).
hex_bytes() {
    # shellcheck disable=SC2059,SC2001 # the format is built from hex digits on purpose
    printf "$(sed 's/../\\x&/g' <<<"$1")"
}
HS_SECRET_B64=$(hex_bytes "$HS_SECRET_HEX" | openssl base64 -A)
input=$(jwt_input HS256 hs)
HS_TOKEN=$input.$(printf '%s' "$input" |
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$HS_SECRET_HEX" -binary | b64url)

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/es256.key" 2>/dev/null ||
    die "openssl could not make the ES256 key"
ES_PUBLIC_PEM_JSON=$(openssl pkey -in "$TMP/es256.key" -pubout | awk '{ printf "%s\\n", $0 }')
# openssl signs ECDSA in DER (SEQUENCE of INTEGER r, s); a JWS wants r || s, 32 bytes each.
es256_sign() {
    local der pos len r s
    der=$(openssl dgst -sha256 -sign "$TMP/es256.key" -binary | od -An -v -tx1 | tr -d ' \n')
    [[ ${der:0:2} == 30 && ${der:4:2} == 02 ]] || die "unexpected ECDSA signature encoding: $der"
    pos=4
    len=$((16#${der:pos+2:2}))
    r=${der:pos+4:len*2}
    pos=$((pos + 4 + len * 2))
    [[ ${der:pos:2} == 02 ]] || die "unexpected ECDSA signature encoding: $der"
    len=$((16#${der:pos+2:2}))
    s=${der:pos+4:len*2}
    r=${r#00} s=${s#00}
    r=$(printf '%64s' "$r" | tr ' ' 0) s=$(printf '%64s' "$s" | tr ' ' 0)
    hex_bytes "$r$s" | b64url
}
input=$(jwt_input ES256 es)
ES_TOKEN=$input.$(printf '%s' "$input" | es256_sign)

# --- configs -------------------------------------------------------------------
# Everything nginx might write goes into TMP (lib-bench.sh's nginx_common and nginx_http_common),
# so it never touches /var/log/nginx or /var/lib/nginx.
write_upstream_config "$UP_PORT"

# One nginx process with a plain and a TLS listener, as the Meridian node has. nginx's defaults
# stay as they are otherwise (session tickets on, 16 KiB TLS buffer), as a user would run it.
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
        listen 127.0.0.1:$NGINX_TLS_PORT ssl;
        ssl_certificate $CERT;
        ssl_certificate_key $CERT_DIR/default.key;
        ssl_protocols $TLS_PROTOCOL;
        ssl_conf_command Ciphersuites $TLS_SUITE;
        ssl_ecdh_curve $TLS_GROUP;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/proxy.conf"

# Three routes to the same upstream that differ only in their auth; longest prefix wins.
cat >"$TMP/routes.json" <<EOF
{ "services": { "nginx": { "endpoints": { "local": ["http://127.0.0.1:$UP_PORT"] }, "timeout_ms": 5000, "retries": 1 } },
  "routes": [
    { "name": "open", "path_prefix": "/", "service": "nginx" },
    { "name": "hs256", "path_prefix": "/hs256/", "service": "nginx",
      "auth": { "jwt": { "issuer": "$ISSUER", "audiences": ["$AUDIENCE"],
                         "keys": [ { "kid": "hs", "alg": "HS256", "secret_base64": "$HS_SECRET_B64" } ] } } },
    { "name": "es256", "path_prefix": "/es256/", "service": "nginx",
      "auth": { "jwt": { "issuer": "$ISSUER", "audiences": ["$AUDIENCE"],
                         "keys": [ { "kid": "es", "alg": "ES256", "pem": "$ES_PUBLIC_PEM_JSON" } ] } } } ] }
EOF

# --- servers -------------------------------------------------------------------
start_nginx upstream "$CLIENT_CPU"
UP_PID=$LAST_PID
wait_http "http://127.0.0.1:$UP_PORT/" 10 "$UP_PID" "$TMP/upstream-error.log" || die "upstream nginx failed to start"

start_nginx proxy "$SERVER_CPU"
NGINX_PID=$LAST_PID
wait_http "http://127.0.0.1:$NGINX_PORT/" 10 "$NGINX_PID" "$TMP/proxy-error.log" || die "nginx proxy failed to start"
wait_http "https://$TLS_NAME:$NGINX_TLS_PORT/" 10 "$NGINX_PID" "$TMP/proxy-error.log" ||
    die "nginx TLS listener failed to answer"

https_args=()
if ((meridian_tls)); then
    https_args=(--https "127.0.0.1:$MERIDIAN_TLS_PORT" --https-cert-dir "$CERT_DIR")
fi
# Run from TMP: the node keeps durable state under ./meridian-data/ID by default.
start_bg meridian "$TMP/meridian.log" \
    env -C "$TMP" MERIDIAN_WORKER_THREADS=1 taskset -c "$SERVER_CPU" "$(realpath "$MERIDIAN_BIN")" node \
    --id bench --region local --http "127.0.0.1:$MERIDIAN_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    "${https_args[@]}" --routes "$TMP/routes.json" --log-level info
MERIDIAN_PID=$LAST_PID
wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" 20 "$MERIDIAN_PID" "$TMP/meridian.log" ||
    die "meridian did not become ready (see log above)"
if ((meridian_tls)); then
    wait_http "https://$TLS_NAME:$MERIDIAN_TLS_PORT/" 10 "$MERIDIAN_PID" "$TMP/meridian.log" ||
        die "meridian's TLS listener did not answer"
    grep -q "https=127.0.0.1:$MERIDIAN_TLS_PORT" "$TMP/meridian.log" ||
        warn "meridian's start line does not show https=127.0.0.1:$MERIDIAN_TLS_PORT"
fi

# --- same TLS on both sides? --------------------------------------------------
# tls_check NAME PORT: one handshake with the client's settings; prints what was negotiated and
# stops the run unless it is the pinned protocol, suite, group and our certificate.
declare -A TLS_SEEN
tls_check() {
    local name=$1 port=$2 out proto suite group sig fp
    out=$(timeout 10 env OPENSSL_CONF="$CLIENT_TLS_CONF" openssl s_client -connect "127.0.0.1:$port" \
        -servername "$TLS_NAME" -CAfile "$CERT" -verify_return_error </dev/null 2>&1) || {
        printf '%s\n' "$out" | tail -n 15 >&2
        die "$name: TLS handshake with the pinned client settings failed"
    }
    proto=$(sed -n 's/^New, \(TLSv[0-9.]*\), Cipher is .*/\1/p' <<<"$out" | head -n 1)
    suite=$(sed -n 's/^New, TLSv[0-9.]*, Cipher is //p' <<<"$out" | head -n 1)
    group=$(sed -n 's/^Server Temp Key: \([^,]*\).*/\1/p' <<<"$out" | head -n 1)
    sig=$(sed -n 's/^Peer signature type: //p' <<<"$out" | head -n 1)
    fp=$(openssl x509 -noout -fingerprint -sha256 <<<"$out" 2>/dev/null | sed 's/.*=//')
    TLS_SEEN[$name]="$proto $suite $group, $sig signature, certificate sha256 ${fp:0:23}..."
    log "$name negotiated: ${TLS_SEEN[$name]}"
    [[ $proto == "$TLS_PROTOCOL" && $suite == "$TLS_SUITE" && $group == "$TLS_GROUP" && $fp == "$CERT_FP" ]] ||
        die "$name negotiated '$proto $suite $group' with certificate $fp; want '$TLS_PROTOCOL $TLS_SUITE $TLS_GROUP' with $CERT_FP"
}
tls_check nginx-tls "$NGINX_TLS_PORT"
((meridian_tls)) && tls_check meridian-tls "$MERIDIAN_TLS_PORT"

# --- measurements -----------------------------------------------------------------
declare -A RPS P50 P99 ERRS CPU_S CPU_C CPU_US CPU_OTHER
ROWS=()
CLK_TCK=$(getconf CLK_TCK)

# process_ticks FILE: per core, the jiffies spent in processes (user + nice + system) or stolen by
# the hypervisor (steal), apart from interrupts and softirqs (where the kernel also handles
# loopback packets for whoever sent them), and the total.
process_ticks() {
    awk '/^cpu[0-9]+ / { print $1, $2 + $3 + $4 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat >"$1"
}

# bench NAME URL [HEADER]: checks the body, warms up, then runs the measured wrk (HEADER on every
# request of both). wrk always reads the pinned client TLS settings; plain HTTP ignores them.
# Besides wrk's figures, the server's own CPU time per request: nginx's master and worker, or the
# Meridian process, between two snapshots around the measured run, over the requests wrk counted.
# Unlike 1/req/s it does not depend on which core was the bottleneck.
bench() {
    local name=$1 url=$2 header=${3:-} body out pids ticks requests user0 sys0 user1 sys1
    # shellcheck disable=SC2207 # PIDs, one per word
    case $name in
    nginx-*) pids=("$NGINX_PID" $(children "$NGINX_PID")) ;;
    *) pids=("$MERIDIAN_PID") ;;
    esac
    local hdr=()
    [[ -n $header ]] && hdr=(-H "$header")
    # A target that answers the wrong thing (401, 404, 502) fast must not pass as fast.
    body=$(curl -fsS --max-time 2 "${hdr[@]}" "$url") || die "$name: request to $url failed"
    [[ $body == hello ]] || die "$name: unexpected body from $url: '$body'"

    if ((WARMUP > 0)); then
        log "$name: warmup ${WARMUP}s"
        run_client /dev/null $((WARMUP + 15)) env OPENSSL_CONF="$CLIENT_TLS_CONF" taskset -c "$CLIENT_CPU" \
            wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "${hdr[@]}" "$url"
    fi
    log "$name: measuring ${DURATION}s"
    out="$TMP/wrk-$name.txt"
    cpu_ticks "$TMP/cpu-before"
    read -r user0 sys0 < <(proc_ticks "${pids[@]}")
    process_ticks "$TMP/proc-before"
    run_client "$out" $((DURATION + 15)) env OPENSSL_CONF="$CLIENT_TLS_CONF" taskset -c "$CLIENT_CPU" \
        wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${hdr[@]}" "$url"
    read -r user1 sys1 < <(proc_ticks "${pids[@]}")
    ticks=$((user1 + sys1 - user0 - sys0))
    process_ticks "$TMP/proc-after"
    cpu_ticks "$TMP/cpu-after"
    CPU_S[$name]=$(cpu_busy "$TMP/cpu-before" "$TMP/cpu-after" "$SERVER_CPU")
    # Core 0 time that went to other processes or to the hypervisor: other work on the machine,
    # inside this row's figures. (The target is pinned there, so all its own time is core 0's.)
    CPU_OTHER[$name]=$(awk -v t="$ticks" -v cpu="cpu$SERVER_CPU" '
        FNR == NR { if ($1 == cpu) { p = $2; a = $3 }; next }
        $1 == cpu { o = 100 * ($2 - p - t) / ($3 - a); printf "%.0f", o < 0 ? 0 : o }
    ' "$TMP/proc-before" "$TMP/proc-after")
    requests=$(awk '/ requests in / { print $1 }' "$out")
    CPU_US[$name]=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="${requests:-0}" \
        'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "n/a" }')
    CPU_C[$name]=$(cpu_busy "$TMP/cpu-before" "$TMP/cpu-after" "$CLIENT_CPU")
    read -r "RPS[$name]" "P50[$name]" "P99[$name]" "ERRS[$name]" < <(parse_wrk "$out") || {
        cat "$out" >&2
        die "$name: could not parse wrk output"
    }
    if ((CPU_OTHER[$name] > 10)); then
        warn "$name: ${CPU_OTHER[$name]}% of core $SERVER_CPU went to other processes or steal; figure is disturbed"
    fi
    if ((CPU_C[$name] >= 90 && CPU_S[$name] < 90)); then
        warn "$name: core $SERVER_CPU only ${CPU_S[$name]}% busy while client core $CLIENT_CPU was ${CPU_C[$name]}%; figure is likely client-bound"
    fi
    [[ ${ERRS[$name]} == 0 ]] || warn "$name: ${ERRS[$name]} errors (socket errors or non-2xx), see numbers with care"
    ROWS+=("$name")
}

# unauthenticated URL: a JWT route must refuse a request without a token, or its row measures nothing.
expect_401() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1") || true
    [[ $code == 401 ]] || die "$1 answered $code without a token; want 401 (is the route's auth active?)"
}

# nginx and Meridian alternate, so slow drift on the machine hits both alike.
bench nginx-http "http://127.0.0.1:$NGINX_PORT/"
bench meridian-http "http://127.0.0.1:$MERIDIAN_PORT/"
bench nginx-tls "https://$TLS_NAME:$NGINX_TLS_PORT/"
((meridian_tls)) && bench meridian-tls "https://$TLS_NAME:$MERIDIAN_TLS_PORT/"
bench nginx-tls-close "https://$TLS_NAME:$NGINX_TLS_PORT/" "Connection: close"
((meridian_tls)) && bench meridian-tls-close "https://$TLS_NAME:$MERIDIAN_TLS_PORT/" "Connection: close"
expect_401 "http://127.0.0.1:$MERIDIAN_PORT/hs256/"
expect_401 "http://127.0.0.1:$MERIDIAN_PORT/es256/"
bench meridian-jwt-hs256 "http://127.0.0.1:$MERIDIAN_PORT/hs256/" "authorization: Bearer $HS_TOKEN"
bench meridian-jwt-es256 "http://127.0.0.1:$MERIDIAN_PORT/es256/" "authorization: Bearer $ES_TOKEN"

# The servers idle from here; stop them so the microbenchmark has core 0 to itself.
stop_all
log "JWT microbenchmark: $JWT_BENCH $JWT_BENCH_SECONDS (core $SERVER_CPU)"
declare -A MICRO
MICRO_CASES=()
run_client "$TMP/jwt_bench.txt" "$(awk -v s="$JWT_BENCH_SECONDS" 'BEGIN { printf "%d", 9 * s * 1.2 + 30 }')" \
    taskset -c "$SERVER_CPU" "$JWT_BENCH" "$JWT_BENCH_SECONDS" || die "$JWT_BENCH failed"
while read -r case ns; do
    [[ $case =~ ^[a-z0-9_]+$ && $ns =~ ^[0-9.]+$ ]] || continue
    MICRO[$case]=$ns
    MICRO_CASES+=("$case")
done <"$TMP/jwt_bench.txt"
((${#MICRO_CASES[@]} > 0)) || die "no figures from $JWT_BENCH: $(cat "$TMP/jwt_bench.txt")"

# --- report ------------------------------------------------------------------------
# at_least / at_most VALUE TARGET: PASS or MISS, n/a without a value.
verdict() { # VALUE OP TARGET
    if [[ $1 == n/a ]]; then
        echo n/a
    else
        awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = op == ">=" ? v >= t : v <= t; print (ok ? "PASS" : "MISS") }'
    fi
}
# added_us A B: 1e6/A - 1e6/B with one decimal (wall us per request of A over B).
added_us() {
    if [[ -z ${1:-} || -z ${2:-} ]]; then echo n/a; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", 1e6 / a - 1e6 / b }'; fi
}
# minus A B: A - B with one decimal, n/a if either is missing.
minus() {
    if [[ -z ${1:-} || -z ${2:-} || $1 == n/a || $2 == n/a ]]; then echo n/a; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; fi
}
# ratio of two rows' field, n/a if a row is missing. Ratios are of the raw figures.
rrow() { # FIELD_ARRAY A B
    local -n f=$1
    ratio "${f[$2]:-}" "${f[$3]:-}"
}

MEASURES=()
add_measure() { MEASURES+=("$1|$2|$3|$4"); } # what|value|target|result

tls_rps=$(rrow RPS meridian-tls nginx-tls)
tls_p99=$(rrow P99 meridian-tls nginx-tls)
add_measure "TLS keep-alive: Meridian / nginx req/s" "$tls_rps" ">= 1.0" "$(verdict "$tls_rps" ">=" 1.0)"
add_measure "TLS keep-alive: Meridian / nginx p99" "$tls_p99" "<= 1.0" "$(verdict "$tls_p99" "<=" 1.0)"
add_measure "TLS keep-alive: Meridian / nginx server CPU per request" "$(rrow CPU_US meridian-tls nginx-tls)" "—" "—"
add_measure "TLS, new connection per request: Meridian / nginx req/s" \
    "$(rrow RPS meridian-tls-close nginx-tls-close)" "—" "—"
add_measure "TLS, new connection per request: Meridian / nginx p99" \
    "$(rrow P99 meridian-tls-close nginx-tls-close)" "—" "—"
add_measure "TLS, new connection per request: Meridian / nginx server CPU per request" \
    "$(rrow CPU_US meridian-tls-close nginx-tls-close)" "—" "—"
add_measure "plain HTTP: Meridian / nginx req/s" "$(rrow RPS meridian-http nginx-http)" "—" "—"
add_measure "TLS / plain HTTP req/s, nginx" "$(rrow RPS nginx-tls nginx-http)" "—" "—"
add_measure "TLS / plain HTTP req/s, Meridian" "$(rrow RPS meridian-tls meridian-http)" "—" "—"
for alg in hs256 es256; do
    name=meridian-jwt-$alg
    add_measure "JWT ${alg^^} / no auth req/s (Meridian, plain HTTP)" "$(rrow RPS "$name" meridian-http)" "—" "—"
    add_measure "JWT ${alg^^}: added server CPU us per request, end to end" \
        "$(minus "${CPU_US[$name]:-}" "${CPU_US[meridian-http]:-}")" "—" "—"
    add_measure "JWT ${alg^^}: added wall us per request (1e6/req/s), end to end" \
        "$(added_us "${RPS[$name]:-}" "${RPS[meridian-http]:-}")" "—" "—"
done
for alg in hs256 rs256 es256; do
    add_measure "JWT ${alg^^}: added us per request, auth check alone, new token (jwt_bench)" \
        "$(awk -v j="${MICRO[admit_jwt_$alg]:-}" -v n="${MICRO[admit_no_auth]:-}" \
            'BEGIN { if (j == "" || n == "") print "n/a"; else printf "%.1f", (j - n) / 1000 }')" "—" "—"
    add_measure "JWT ${alg^^}: added us per request, auth check alone, repeated token (jwt_bench)" \
        "$(awk -v j="${MICRO[admit_jwt_${alg}_repeat]:-}" -v n="${MICRO[admit_no_auth]:-}" \
            'BEGIN { if (j == "" || n == "") print "n/a"; else printf "%.1f", (j - n) / 1000 }')" "—" "—"
done

micro_label() {
    local alg=${1##*_}
    case $1 in
    admit_jwt_*_repeat)
        alg=${1#admit_jwt_}
        alg=${alg%_repeat}
        echo "JWT ${alg^^}, the same token again (signature remembered; claims checked)"
        ;;
    admit_no_auth) echo "route without auth rules" ;;
    admit_api_key) echo "API key (SHA-256 of the key, 1 key on the route)" ;;
    admit_jwt_*) echo "JWT ${alg^^}, a token not seen before (decode, signature, exp/nbf/iss/aud, identity)" ;;
    signature_*) echo "signature check alone, ${alg^^}" ;;
    *) echo "$1" ;;
    esac
}

printf '\n%-20s %10s %8s %8s %12s %7s %7s %9s %7s\n' target "req/s" "p50 ms" "p99 ms" "cpu us/req" errors \
    "cpu$SERVER_CPU%" "(others)" "cpu$CLIENT_CPU%"
for t in "${ROWS[@]}"; do
    printf '%-20s %10.0f %8.3f %8.3f %12s %7s %7s %9s %7s\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" "${CPU_US[$t]}" \
        "${ERRS[$t]}" "${CPU_S[$t]}" "(${CPU_OTHER[$t]})" "${CPU_C[$t]}"
done
((meridian_tls)) || printf '%-20s %10s   (not measured: %s)\n' meridian-tls - "$tls_skip_reason"
echo
for m in "${MEASURES[@]}"; do
    IFS='|' read -r what value target result <<<"$m"
    printf '%-76s %8s %8s %5s\n' "$what" "$value" "$target" "$result"
done
echo
printf '%-70s %12s\n' "jwt_bench case (one thread)" "ns/request"
for c in "${MICRO_CASES[@]}"; do
    printf '%-70s %12s\n' "$c: $(micro_label "$c")" "${MICRO[$c]}"
done
echo
for name in nginx-tls meridian-tls; do
    [[ -n ${TLS_SEEN[$name]:-} ]] && echo "negotiated by $name: ${TLS_SEEN[$name]}"
done

if ((markdown)); then
    cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo
    echo "Measured $(date -u +%Y-%m-%d) on ${cpu_model:-unknown CPU} ($(nproc) cores; cores $SERVER_CPU / $CLIENT_CPU $BUSY_BEFORE busy before the run);" \
        "$(nginx -v 2>&1 | sed 's/^nginx version: //'), wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')," \
        "$(openssl version | awk '{ print $1, $2 }'); meridian: $MERIDIAN_BIN."
    echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s after a ${WARMUP}s warmup; server under test alone on core $SERVER_CPU," \
        "wrk + upstream on core $CLIENT_CPU. TLS: $TLS_PROTOCOL $TLS_SUITE $TLS_GROUP, ECDSA P-256 certificate, checked" \
        "with s_client on each side."
    echo
    echo "| target | req/s | p50 ms | p99 ms | server CPU us/req | errors | core $SERVER_CPU busy (other processes) | core $CLIENT_CPU busy |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for t in "${ROWS[@]}"; do
        printf '| %s | %.0f | %.3f | %.3f | %s | %s | %s%% (%s%%) | %s%% |\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" \
            "${CPU_US[$t]}" "${ERRS[$t]}" "${CPU_S[$t]}" "${CPU_OTHER[$t]}" "${CPU_C[$t]}"
    done
    ((meridian_tls)) || echo "| meridian-tls | not measured: $tls_skip_reason | | | | | | |"
    echo
    echo "| measure | value | target | result |"
    echo "|---|---:|---:|---|"
    for m in "${MEASURES[@]}"; do
        IFS='|' read -r what value target result <<<"$m"
        echo "| $what | $value | $target | $result |"
    done
    echo
    echo "| jwt_bench case (one thread) | ns per request |"
    echo "|---|---:|"
    for c in "${MICRO_CASES[@]}"; do
        echo "| \`$c\`: $(micro_label "$c") | ${MICRO[$c]} |"
    done
fi

if ((!meridian_tls)); then
    unmeasured=1
    warn "the TLS figures were not measured: $tls_skip_reason"
    exit 1
fi
if ((fail_on_miss)); then
    for m in "${MEASURES[@]}"; do
        [[ ${m##*|} == MISS ]] && exit 3
    done
fi
exit 0
