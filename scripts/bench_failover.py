#!/usr/bin/env python3
"""Cross-region failover benchmark for Meridian: real processes on loopback.

Run it through scripts/bench-failover.sh, which finds or builds the binary and installs wrk first.

One 3-region cluster (us1, eu1, ap1; one node and one `meridian upstream` per region; service
`echo` with a 200 ms health check, like tests/tests/t80_failover.rs), measured in one run, in this
order:
  a. local latency: SAMPLES sequential GETs to the us node over one keep-alive connection, all
     served by the us upstream (p50/p99).
  b. local throughput: wrk against the us node, its upstream healthy.
  c. upstream kill under load: paced GETs from several threads plus paced POSTs (1000-byte body),
     every request with its own x-request-id, against the us node; half-way through, SIGKILL the
     us upstream. Two slow POSTs (held 1 s by the upstream) are in flight at the kill: they reached
     the dying upstream, so the right answer is 502, not a repeat in another region.
     Figures: GETs not answered 200 (target 0); POSTs not answered 200 other than those in flight at
     the kill (target 0); requests served twice: duplicate_request_ids on the eu and ap upstreams
     (/_control/stats), in-flight POSTs answered by another region, and requests reaching eu/ap that
     no answer accounts for (target 0).
  d. forwarded latency: as (a) while the us upstream is dead, every request served by eu or ap;
     extra p50 over local (target < 1 ms) and extra p99.
  e. forwarded throughput: as (b) with the us upstream dead; req/s and the ratio to (b).
  f. recovery: restart the us upstream on the same port; time until the us node's answers carry
     x-meridian-region: us again.

Progress goes to stderr; stdout carries only the results.
Python 3.11 standard library only. Process handling, the admin client and the report helpers are
shared with scripts/bench_control_plane.py (imported from it).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

# Shared with the control-plane benchmark (same directory, on sys.path when run as a script);
# no __pycache__ left in scripts/ by the import.
sys.dont_write_bytecode = True
from bench_control_plane import (  # noqa: E402
    UPSTREAM_RE,
    Admin,
    BenchError,
    Node,
    Procs,
    cluster_leader,
    fmt_s,
    free_udp_port,
    log,
    node_env,
    pct,
    build_kind,
    busy_note,
    print_table,
    read_lines,
    run_bench,
    tail,
    utc_now,
    verdict,
    warn,
)

mono = time.monotonic
perf = time.perf_counter

REGIONS = ("us", "eu", "ap")
SERVICE = "echo"
POST_BODY = b"p" * 1000
INFLIGHT_POSTS = 2
INFLIGHT_DELAY_MS = 1000  # how long the upstream holds an in-flight POST
INFLIGHT_LEAD_S = 0.4  # the in-flight POSTs are sent this long before the kill

TARGET_FAILED_GETS = 0
TARGET_FAILED_POSTS = 0
TARGET_DUPLICATES = 0
TARGET_EXTRA_P50_MS = 1.0


# --------------------------------------------------------------------------------------------
# data-plane client


@dataclass
class Answer:
    status: int  # 0: no HTTP answer (transport error)
    region: str = ""
    node: str = ""
    request_id: str = ""
    body: bytes = b""
    error: str = ""


class Http:
    """One keep-alive HTTP/1.1 connection to a node's (or upstream's) HTTP port."""

    def __init__(self, addr: str, timeout: float = 5.0) -> None:
        host, port = addr.rsplit(":", 1)
        self.host, self.port = host.strip("[]"), int(port)
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None, timeout: float | None = None) -> Answer:
        """Never raises for transport failures: they come back as status 0 with the error."""
        t = self.timeout if timeout is None else timeout
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=t)
        else:
            self.conn.timeout = t
            if self.conn.sock is not None:
                self.conn.sock.settimeout(t)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return Answer(0, error=f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        if resp.will_close:
            self.close()
        return Answer(resp.status, resp.getheader("x-meridian-region") or "",
                      resp.getheader("x-meridian-node") or "", resp.getheader("x-request-id") or "",
                      data)


def json_of(body: bytes) -> dict:
    try:
        d = json.loads(body)
        return d if isinstance(d, dict) else {}
    except ValueError:
        return {}


def get_text(addr: str, path: str, timeout: float = 2.0) -> str:
    a = Http(addr, timeout).request("GET", path)
    return a.body.decode("utf-8", "replace") if a.status == 200 else ""


def metric_sum(text: str, prefix: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(prefix) and not line.startswith("#"):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                pass
    return total


# --------------------------------------------------------------------------------------------
# wrk


WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def wrk_ms(v: str) -> float | None:
    m = re.fullmatch(r"([0-9.]+)([a-z]+)", v)
    if not m or m.group(2) not in WRK_UNITS:
        return None
    return float(m.group(1)) * WRK_UNITS[m.group(2)]


def parse_wrk(text: str) -> dict | None:
    """req/s, requests, p50/p99 ms and errors (socket errors + non-2xx/3xx) from wrk --latency."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    total = re.search(r"^\s*(\d+) requests in ", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if not (rps and total and p50 and p99):
        return None
    errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        errors += sum(int(x) for x in m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        errors += int(m.group(1))
    return {"rps": float(rps.group(1)), "requests": int(total.group(1)),
            "p50_ms": wrk_ms(p50.group(1)), "p99_ms": wrk_ms(p99.group(1)), "errors": errors}


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class Rec:
    kind: str  # GET, POST, INFLIGHT
    rid: str
    start: float
    end: float
    ans: Answer


@dataclass
class Upstream:
    region: str
    name: str
    out: str
    err: str
    proc: subprocess.Popen | None = None
    addr: str | None = None

    def url(self) -> str:
        return f"http://{self.addr}"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bin = os.path.realpath(args.bin)
        self.procs = Procs()
        self.tmp = tempfile.mkdtemp(prefix="meridian-failover-bench.")
        self.tls = os.path.join(self.tmp, "tls")
        self.routes_path = os.path.join(self.tmp, "routes.json")
        self.nodes: dict[str, Node] = {}
        self.ups: dict[str, Upstream] = {}
        self.failed = False
        self.res: dict = {}

    # -- setup ---------------------------------------------------------------------------------

    def run_quick(self, argv: list[str], what: str) -> None:
        r = subprocess.run(argv, cwd=self.tmp, env=node_env(), capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise BenchError(f"{what} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")

    def start_upstream(self, region: str, name: str, listen: str, within: float) -> Upstream:
        """Start `meridian upstream` on `listen`, retrying while the port is still taken."""
        deadline = mono() + within
        attempt = 0
        while True:
            attempt += 1
            u = Upstream(region, name, os.path.join(self.tmp, f"{name}-{attempt}.out"),
                         os.path.join(self.tmp, f"{name}-{attempt}.log"))
            u.proc = self.procs.start([self.bin, "upstream", "--listen", listen, "--name", name],
                                      u.out, u.err, self.tmp)
            while u.addr is None and u.proc.poll() is None and mono() < deadline:
                for line in read_lines(u.out):
                    if m := UPSTREAM_RE.match(line):
                        u.addr = m.group(2)
                if u.addr is None:
                    time.sleep(0.005)
            if u.addr is not None:
                return u
            if u.proc.poll() is None:
                self.procs.stop([u.proc])
            if mono() >= deadline:
                raise BenchError(f"upstream {name} not listening on {listen} within {within:.0f} s:\n"
                                 f"{tail(u.err)}")
            time.sleep(0.05)

    def table(self) -> dict:
        return {
            "services": {SERVICE: {
                "endpoints": {r: [self.ups[r].url()] for r in REGIONS},
                "health_check": {"path": "/healthz", "interval_ms": self.args.hc_interval_ms,
                                 "timeout_ms": self.args.hc_timeout_ms},
                "outlier": {"base_ejection_ms": 1000, "max_ejection_ms": 2000},
                "timeout_ms": 5000,
                "retries": 2,
            }},
            "routes": [{"name": "all", "path_prefix": "/", "service": SERVICE}],
        }

    def setup(self) -> None:
        ids = ",".join(f"{r}1" for r in REGIONS)
        self.run_quick([self.bin, "certs", "--out", self.tls, "--nodes", ids], "meridian certs")
        for r in REGIONS:
            self.ups[r] = self.start_upstream(r, f"{r}-up", "127.0.0.1:0", 10)
        log("upstreams: " + ", ".join(f"{r} {u.addr} (pid {u.proc.pid})" for r, u in self.ups.items()))
        with open(self.routes_path, "w", encoding="utf-8") as f:
            json.dump(self.table(), f)

    def launch(self) -> float:
        seed = f"127.0.0.1:{free_udp_port()}"
        argvs = []
        for r in REGIONS:
            nid = f"{r}1"
            n = Node(id=nid, region=r, out=os.path.join(self.tmp, f"{nid}.out"),
                     err=os.path.join(self.tmp, f"{nid}.log"),
                     data_dir=os.path.join(self.tmp, "data", nid))
            self.nodes[r] = n
            argv = [self.bin, "node", "--id", nid, "--region", r,
                    "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                    "--gossip", seed if r == "us" else "127.0.0.1:0",
                    "--peer", "127.0.0.1:0", "--expect", "3",
                    "--tls-dir", self.tls, "--data-dir", n.data_dir,
                    "--routes", self.routes_path, "--log-level", self.args.log_level]
            if r != "us":
                argv += ["--seeds", seed]
            argvs.append(argv)
        t0 = mono()
        for n, argv in zip(self.nodes.values(), argvs):
            n.proc = self.procs.start(argv, n.out, n.err, self.tmp)
        log(f"cluster: launched us1, eu1, ap1 (pids {', '.join(str(n.proc.pid) for n in self.nodes.values())}), "
            f"seed gossip {seed}")
        return t0

    def check_nodes(self) -> None:
        for n in self.nodes.values():
            n.check_alive()

    def wait_formed(self, t0: float) -> None:
        deadline = t0 + self.args.formation_timeout
        last = ""
        while mono() < deadline:
            self.check_nodes()
            for n in self.nodes.values():
                if n.admin is None:
                    n.scan_stdout()
            if all(n.admin for n in self.nodes.values()):
                ready = [n.admin.try_get("/readyz", 1.0)[0] == 200 for n in self.nodes.values()]
                docs = [n.admin.try_get("/cluster", 1.0)[1] for n in self.nodes.values()]
                roles = [(d.get("raft") or {}).get("role") if isinstance(d, dict) else None for d in docs]
                if "standalone" in roles:
                    raise BenchError(f"{self.bin} runs the nodes standalone (no cluster mode in this "
                                     "build?); rebuild it or point MERIDIAN_BIN at a newer binary")
                leaders = [cluster_leader(d) for d in docs]
                if all(ready) and leaders[0] is not None and len(set(leaders)) == 1:
                    log(f"cluster formed in {mono() - t0:.3f} s, leader {leaders[0]}")
                    return
                last = f"ready={ready} leaders={leaders}"
            time.sleep(0.02)
        raise BenchError(f"cluster not formed after {self.args.formation_timeout:.0f} s "
                         f"({last or 'admin addresses not printed yet'}); us1 log:\n"
                         f"{tail(self.nodes['us'].err)}")

    def view(self, viewer: str) -> dict[str, tuple[bool, int, int] | None]:
        """(live, healthy, total) of `echo` per region as node `viewer`'s /cluster shows it."""
        st, d = self.nodes[viewer].admin.try_get("/cluster", 1.0)
        out: dict[str, tuple[bool, int, int] | None] = {r: None for r in REGIONS}
        if st != 200 or not isinstance(d, dict):
            return out
        for m in d.get("members") or []:
            if not isinstance(m, dict):
                continue
            r = {f"{x}1": x for x in REGIONS}.get(m.get("id"))
            s = (m.get("services") or {}).get(SERVICE) if isinstance(m.get("services"), dict) else None
            if r and isinstance(s, dict) and isinstance(s.get("healthy"), int) and isinstance(s.get("total"), int):
                out[r] = (bool(m.get("live")), s["healthy"], s["total"])
        return out

    def wait_views(self, viewers: list[str], want: dict[str, int], timeout: float, what: str) -> float:
        """Until every viewer sees each region in `want` live with that many healthy endpoints."""
        t0 = mono()
        last = {}
        while True:
            self.check_nodes()
            last = {v: self.view(v) for v in viewers}
            if all(all(vw[r] is not None and vw[r][0] and vw[r][1] == h for r, h in want.items())
                   for vw in last.values()):
                return mono() - t0
            if mono() - t0 > timeout:
                raise BenchError(f"{what}: gossip views (live, healthy, total) not as wanted {want} "
                                 f"within {timeout:.0f} s: {last}")
            time.sleep(0.025)

    def ups_stats(self, regions: tuple[str, ...], cmd: str = "stats") -> dict[str, dict]:
        out = {}
        for r in regions:
            st, d = Admin(self.ups[r].addr, 2.0).request("POST", f"/_control/{cmd}")
            if st != 200 or not isinstance(d, dict):
                raise BenchError(f"{r} upstream /_control/{cmd}: {st} {d}")
            out[r] = d
        return out

    # -- a/d. sequential latency ---------------------------------------------------------------

    def seq_latency(self, label: str, want_local: bool) -> dict:
        addr = self.nodes["us"].http
        c = Http(addr, 5.0)
        n, warm = self.args.samples, min(200, self.args.samples)
        lat: list[float] = []
        regions: collections.Counter = collections.Counter()
        bad: list[str] = []
        end = mono() + self.args.latency_timeout
        log(f"{label} latency: {warm} warm-up + {n} sequential GETs to us1 {addr} (keep-alive)")
        for i in range(warm + n):
            if mono() > end:
                warn(f"{label} latency: stopped after {i} requests ({self.args.latency_timeout:.0f} s bound)")
                break
            t = perf()
            a = c.request("GET", f"/lat/{label}/{i}")
            dt = (perf() - t) * 1000
            if i < warm:
                continue
            regions[a.region or "?"] += 1
            if a.status != 200 or (a.region == "us") != want_local:
                if len(bad) < 5:
                    bad.append(f"{a.status} from {a.region or '?'} {a.error}".strip())
                continue
            lat.append(dt)
        c.close()
        lat.sort()
        r = {"lat": lat, "regions": dict(regions), "bad": bad, "sent": sum(regions.values())}
        if lat:
            log(f"{label} latency: p50 {pct(lat, 50):.3f} ms, p99 {pct(lat, 99):.3f} ms; "
                f"served by {dict(regions)}")
        if bad:
            warn(f"{label} latency: {r['sent'] - len(lat)} answer(s) not counted, e.g. {bad}")
        return r

    # -- b/e. wrk ------------------------------------------------------------------------------

    def run_wrk(self, label: str) -> dict:
        url = f"http://{self.nodes['us'].http}/wrk/{label}"
        before = self.ups_stats(tuple(r for r in REGIONS if self.ups[r].proc.poll() is None))
        argv = ["wrk", f"-t{self.args.wrk_threads}", f"-c{self.args.connections}",
                f"-d{self.args.duration}s", "--latency", url]
        log(f"{label} throughput: {' '.join(argv)}")
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=self.args.duration + 15,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"wrk ({label}) ran past {self.args.duration + 15} s") from e
        with open(os.path.join(self.tmp, f"wrk-{label}.txt"), "w", encoding="utf-8") as f:
            f.write(r.stdout + r.stderr)
        w = parse_wrk(r.stdout)
        if r.returncode != 0 or w is None:
            raise BenchError(f"wrk ({label}) failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
        after = self.ups_stats(tuple(before))
        w["served"] = {k: after[k]["requests"] - before[k]["requests"] for k in before}
        log(f"{label} throughput: {w['rps']:.0f} req/s, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, "
            f"{w['errors']} error(s); upstream requests {w['served']}")
        return w

    # -- c. kill under load --------------------------------------------------------------------

    def kill_under_load(self) -> dict:
        a = self.args
        us_node, us_up = self.nodes["us"], self.ups["us"]
        addr = us_node.http
        self.ups_stats(("eu", "ap"), "reset")
        fwd_before = metric_sum(get_text(us_node.admin_addr, "/metrics"),
                                'meridian_forwards_total{from_region="us"')
        recs: list[Rec] = []
        lock = threading.Lock()
        t_start = mono() + 0.05
        t_end = t_start + a.load_seconds
        kill_at = t_start + a.load_seconds * a.kill_fraction

        def worker(kind: str, tid: int, interval: float, phase: float) -> None:
            c = Http(addr, 5.0)
            i = 0
            while True:
                due = t_start + (i + phase) * interval
                if due >= t_end or mono() >= t_end:
                    break
                wait = due - mono()
                if wait > 0:
                    time.sleep(wait)
                rid = f"bench-{kind.lower()}-{tid}-{i}"
                h = {"x-request-id": rid}
                s = mono()
                if kind == "POST":
                    ans = c.request("POST", f"/load-post?i={i}", h, POST_BODY)
                else:
                    ans = c.request("GET", f"/load?i={i}", h)
                with lock:
                    recs.append(Rec(kind, rid, s, mono(), ans))
                i += 1
            c.close()

        def inflight(k: int) -> None:
            rid = f"bench-inflight-post-{k}"
            s = mono()
            ans = Http(addr, 10.0).request("POST", f"/inflight?delay_ms={INFLIGHT_DELAY_MS}",
                                           {"x-request-id": rid}, b"in-flight")
            with lock:
                recs.append(Rec("INFLIGHT", rid, s, mono(), ans))

        # GET threads spread evenly; POSTs half an interval off the kill instant, so that a load
        # POST caught at the kill is chance, not the schedule (the slow POSTs cover that case).
        threads = [threading.Thread(target=worker, args=("GET", t, a.load_threads / a.load_rps, t / a.load_threads),
                                    daemon=True) for t in range(a.load_threads)]
        threads.append(threading.Thread(target=worker, args=("POST", 0, 1 / a.post_rps, 0.5), daemon=True))
        log(f"kill under load: {a.load_seconds:g} s of GETs ({a.load_rps:g}/s over {a.load_threads} "
            f"threads) + POSTs ({a.post_rps:g}/s, {len(POST_BODY)} B) to us1; SIGKILL the us upstream "
            f"after {a.load_seconds * a.kill_fraction:.1f} s with {INFLIGHT_POSTS} slow POSTs in flight")
        for t in threads:
            t.start()
        time.sleep(max(0.0, kill_at - INFLIGHT_LEAD_S - mono()))
        probes = [threading.Thread(target=inflight, args=(k,), daemon=True) for k in range(INFLIGHT_POSTS)]
        for t in probes:
            t.start()
        time.sleep(max(0.0, kill_at - mono()))
        log(f"kill under load: {utc_now()} SIGKILL us upstream (pid {us_up.proc.pid})")
        t_kill = mono()
        us_up.proc.send_signal(signal.SIGKILL)
        try:
            us_up.proc.wait(timeout=5)
        except subprocess.TimeoutExpired as e:
            raise BenchError("the us upstream did not die within 5 s of SIGKILL") from e

        # The us node's own view of its endpoint, polled meanwhile (tells when forwarding no
        # longer needs a failed local attempt first).
        down_s = None
        t_view_end = t_kill + 10
        while mono() < t_view_end:
            v = self.view("us")["us"]
            if v is not None and v[1] == 0:
                down_s = mono() - t_kill
                break
            time.sleep(0.025)
        for t in threads + probes:
            t.join(max(0.1, t_end + 12 - mono()))
        if any(t.is_alive() for t in threads + probes):
            raise BenchError("load threads still running 12 s after the end of the load")

        fwd_after = metric_sum(get_text(us_node.admin_addr, "/metrics"),
                               'meridian_forwards_total{from_region="us"')
        stats = self.ups_stats(("eu", "ap"))
        return self.judge_load(recs, t_kill, down_s, stats, fwd_after - fwd_before)

    def judge_load(self, recs: list[Rec], t_kill: float, down_s: float | None, stats: dict,
                   forwards: float) -> dict:
        recs.sort(key=lambda r: r.start)
        res: dict = {"down_s": down_s, "forwards": forwards, "stats": stats}
        gets = [r for r in recs if r.kind == "GET"]
        posts = [r for r in recs if r.kind == "POST"]
        probes = [r for r in recs if r.kind == "INFLIGHT"]

        def in_flight(r: Rec) -> bool:
            return r.start <= t_kill <= r.end

        def bad_echo(r: Rec) -> bool:
            # A 200 must carry our id and come from the upstream of the region it claims.
            j = json_of(r.ans.body)
            return (r.ans.request_id != r.rid or j.get("request_id") != r.rid
                    or j.get("name") not in (f"{r.ans.region}-up", f"{r.ans.region}-up-2"))

        def describe(r: Rec) -> str:
            j = json_of(r.ans.body)
            what = j.get("error") or r.ans.error or r.ans.body[:80].decode("utf-8", "replace")
            return (f"{r.kind} {r.rid} at {r.start - t_kill:+.3f} s: {r.ans.status} "
                    f"{r.ans.region or '-'} {what}")

        get_fail = [r for r in gets if r.ans.status != 200 or bad_echo(r)]
        post_fail = [r for r in posts if r.ans.status != 200 or bad_echo(r)]
        post_fail_inflight = [r for r in post_fail if in_flight(r) and r.ans.status == 502]
        post_fail_other = [r for r in post_fail if r not in post_fail_inflight]
        res.update({
            "gets": len(gets), "gets_after": sum(1 for r in gets if r.start > t_kill),
            "posts": len(posts), "posts_after": sum(1 for r in posts if r.start > t_kill),
            "get_fail": [describe(r) for r in get_fail],
            "post_fail_other": [describe(r) for r in post_fail_other],
            "post_fail_inflight": [describe(r) for r in post_fail_inflight],
        })
        # Served twice: an id an upstream saw twice; a slow POST that reached the dying upstream
        # (sent INFLIGHT_LEAD_S before the kill, held INFLIGHT_DELAY_MS) yet answered 200 by another
        # region; a request that reached eu/ap without an answer from there accounting for it.
        dup_ids = sum(int(s.get("duplicate_request_ids") or 0) for s in stats.values())
        probe_twice = [r for r in probes if r.ans.status == 200 and r.ans.region != "us"]
        answered_elsewhere = sum(1 for r in recs if r.ans.status != 0 and r.ans.region in ("eu", "ap")
                                 and json_of(r.ans.body).get("name", "").startswith(r.ans.region))
        reached = sum(int(s.get("requests") or 0) for s in stats.values())
        unaccounted = max(0, reached - answered_elsewhere)
        res.update({
            "dup_ids": dup_ids, "probe_twice": [describe(r) for r in probe_twice],
            "reached_elsewhere": reached, "answered_elsewhere": answered_elsewhere,
            "unaccounted": unaccounted, "served_twice": dup_ids + len(probe_twice) + unaccounted,
            "probes": [describe(r) for r in probes],
        })
        by_region = {"before": collections.Counter(), "after": collections.Counter()}
        for r in gets + posts:
            if r.ans.status == 200:
                by_region["after" if r.start > t_kill else "before"][r.ans.region or "?"] += 1
        res["by_region"] = {k: dict(v) for k, v in by_region.items()}
        after = sorted((r.end - r.start) * 1000 for r in gets if r.start > t_kill - 0.5)
        res["slowest_get_ms"] = after[-1] if after else None
        res["after_us"] = sum(1 for r in gets + posts if r.start > t_kill + 0.05 and r.ans.region == "us")
        t_first = min((r.start for r in recs), default=t_kill)
        t_last = max((r.end for r in recs), default=t_kill)
        res["span_s"] = t_last - t_first
        log(f"kill under load: {len(gets)} GETs ({len(get_fail)} not 200), {len(posts)} POSTs "
            f"({len(post_fail)} not 200, {len(post_fail_inflight)} of them 502 in flight at the kill); "
            f"served before/after the kill {res['by_region']}; us1 saw its endpoint down "
            f"{fmt_s(down_s)} after the kill")
        for line in res["probes"]:
            log(f"  in flight at the kill: {line}")
        return res

    # -- f. recovery ---------------------------------------------------------------------------

    def recovery(self) -> dict:
        old = self.ups["us"]
        port = old.addr.rsplit(":", 1)[1]
        c = Http(self.nodes["us"].http, 5.0)
        log(f"recovery: {utc_now()} restarting the us upstream on 127.0.0.1:{port}; polling GET on us1")
        t0 = mono()
        self.ups["us"] = self.start_upstream("us", "us-up-2", f"127.0.0.1:{port}", 10)
        t_listen = mono()
        polls, bad, t_back = 0, [], None
        end = t_listen + self.args.recovery_timeout
        while mono() < end:
            polls += 1
            a = c.request("GET", f"/recovering/{polls}")
            if a.status != 200 and len(bad) < 5:
                bad.append(f"{a.status} {a.error}".strip())
            if a.status == 200 and a.region == "us":
                t_back = mono()
                break
            time.sleep(self.args.recovery_poll_ms / 1000)
        sticky = 0
        if t_back is not None:
            for i in range(20):
                a = c.request("GET", f"/after-recovery/{i}")
                sticky += a.status != 200 or a.region != "us"
        c.close()
        res = {"back_s": None if t_back is None else t_back - t0,
               "back_after_listen_s": None if t_back is None else t_back - t_listen,
               "listen_s": t_listen - t0, "polls": polls, "bad": bad, "not_local_after": sticky}
        log(f"recovery: listening after {res['listen_s']:.3f} s, served from us again after "
            f"{fmt_s(res['back_s'])} ({polls} polls)")
        return res

    # -- whole run -----------------------------------------------------------------------------

    def run(self) -> None:
        res = self.res
        self.setup()
        t0 = self.launch()
        self.wait_formed(t0)
        took = self.wait_views(list(REGIONS), {r: 1 for r in REGIONS}, 15, "settling")
        log(f"every node sees us, eu, ap live with {SERVICE} healthy ({took:.3f} s after formation)")
        for r in REGIONS:  # each node serves its own region
            a = Http(self.nodes[r].http).request("GET", "/warm")
            if a.status != 200 or a.region != r:
                raise BenchError(f"{r}1: GET /warm answered {a.status} from {a.region or '?'}: "
                                 f"{a.body[:200]!r} {a.error}")

        res["lat_local"] = self.seq_latency("local", want_local=True)
        res["wrk_local"] = self.run_wrk("local")
        res["load"] = self.kill_under_load()
        took = self.wait_views(["us"], {"us": 0}, 10, "us endpoint down")
        res["lat_fwd"] = self.seq_latency("forwarded", want_local=False)
        res["wrk_fwd"] = self.run_wrk("forwarded")
        res["recovery"] = self.recovery()
        for n in self.nodes.values():
            n.check_alive()


# --------------------------------------------------------------------------------------------
# report


def fmt_ms3(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f} ms"


def build_rows(res: dict, args: argparse.Namespace) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []

    ld = res.get("load")
    if ld:
        v = len(ld["get_fail"])
        rows.append((f"GETs not answered 200 during the us upstream kill ({ld['gets']} GETs, "
                     f"{ld['gets_after']} after the kill)", str(v), str(TARGET_FAILED_GETS),
                     "PASS" if v <= TARGET_FAILED_GETS else "MISS"))
        v = len(ld["post_fail_other"])
        rows.append((f"POSTs not answered 200 ({ld['posts']} POSTs, {ld['posts_after']} after the kill; "
                     "502 in flight at the kill excluded)", str(v), str(TARGET_FAILED_POSTS),
                     "PASS" if v <= TARGET_FAILED_POSTS else "MISS"))
        v = ld["served_twice"]
        rows.append(("requests served twice (duplicate ids on eu+ap, in-flight POSTs repeated, "
                     "unaccounted)", str(v), str(TARGET_DUPLICATES),
                     "PASS" if v <= TARGET_DUPLICATES else "MISS"))
        notes.append(f"kill under load: {ld['span_s']:.1f} s of load; answers 200 by region, requests started "
                     f"before the kill {ld['by_region']['before']}, after {ld['by_region']['after']}; slowest GET around "
                     f"the kill {fmt_ms3(ld['slowest_get_ms'])}; us1's gossip view showed its us endpoint "
                     f"down {fmt_s(ld['down_s'])} after the kill")
        notes.append(f"{len(ld['probes'])} slow POSTs in flight at the kill (held {INFLIGHT_DELAY_MS} ms by "
                     f"the us upstream; expected 502, not repeated): "
                     + "; ".join(ld["probes"]))
        if ld["post_fail_inflight"]:
            notes.append("load POSTs in flight at the kill answered 502 (not repeated, allowed): "
                         + "; ".join(ld["post_fail_inflight"][:3]))
        for what, lst in (("GETs not answered 200", ld["get_fail"]),
                          ("POSTs not answered 200", ld["post_fail_other"])):
            if lst:
                notes.append(f"{what} (first {min(5, len(lst))}): " + "; ".join(lst[:5]))
        notes.append(f"exactly once: duplicate_request_ids eu+ap = {ld['dup_ids']}; requests reaching "
                     f"eu+ap upstreams {ld['reached_elsewhere']} vs answers from eu/ap "
                     f"{ld['answered_elsewhere']}; us1 meridian_forwards_total +{ld['forwards']:.0f}")
        if ld["after_us"]:
            notes.append(f"{ld['after_us']} request(s) sent >50 ms after the kill were answered by us (?)")
    else:
        rows.append(("GETs not answered 200 during the us upstream kill", "n/a", "0", "n/a"))

    lo, fw = res.get("lat_local"), res.get("lat_fwd")
    p = {}
    for key, d in (("local", lo), ("fwd", fw)):
        lat = d["lat"] if d else []
        p[key] = (pct(lat, 50), pct(lat, 99)) if lat else (None, None)
    if lo:
        rows.append((f"GET latency local (us1 -> us upstream), p50 / p99 ({len(lo['lat'])} seq.)",
                     f"{fmt_ms3(p['local'][0])} / {fmt_ms3(p['local'][1])}", "", ""))
    if fw:
        rows.append((f"GET latency forwarded (us1 -> eu/ap -> upstream), p50 / p99 ({len(fw['lat'])} seq.)",
                     f"{fmt_ms3(p['fwd'][0])} / {fmt_ms3(p['fwd'][1])}", "", ""))
        notes.append(f"forwarded latency samples served by {fw['regions']}")
    extra50 = extra99 = None
    if p.get("local", (None,))[0] is not None and p.get("fwd", (None,))[0] is not None:
        extra50 = p["fwd"][0] - p["local"][0]
        extra99 = p["fwd"][1] - p["local"][1]
    rows.append(("extra latency of a forwarded request, p50", fmt_ms3(extra50),
                 f"< {TARGET_EXTRA_P50_MS:g} ms", verdict(extra50, TARGET_EXTRA_P50_MS)))
    rows.append(("extra latency of a forwarded request, p99", fmt_ms3(extra99), "", ""))
    for d, what in ((lo, "local"), (fw, "forwarded")):
        if d and d["bad"]:
            notes.append(f"{what} latency: {d['sent'] - len(d['lat'])} answer(s) left out, e.g. {d['bad']}")

    wl, wf = res.get("wrk_local"), res.get("wrk_fwd")
    for w, what in ((wl, "local (us upstream healthy)"), (wf, "forwarded (us upstream dead)")):
        if w:
            rows.append((f"throughput {what}, wrk", f"{w['rps']:.0f} req/s", "", ""))
            served = ", ".join(f"{k} {v}" for k, v in w["served"].items())
            notes.append(f"wrk {what}: {w['requests']} requests, p50 {fmt_ms3(w['p50_ms'])}, p99 "
                         f"{fmt_ms3(w['p99_ms'])}, {w['errors']} error(s); upstream requests {served}")
    if wf and args.log_level in ("info", "debug", "trace"):
        notes.append(f"nodes log at {args.log_level}: us1 writes one `request forwarded` line per forward, "
                     "which the forwarded req/s pays for (LOG_LEVEL=warn to leave it out)")
    ratio = wf["rps"] / wl["rps"] if wl and wf and wl["rps"] else None
    rows.append(("forwarded / local throughput", "n/a" if ratio is None else f"{ratio:.2f}", "", ""))
    for w, what in ((wl, "local"), (wf, "forwarded")):
        if w and w["errors"]:
            notes.append(f"wrk {what}: {w['errors']} socket error(s) or non-2xx answer(s): its req/s "
                         "counts failures too")

    rc = res.get("recovery")
    v = rc["back_s"] if rc else None
    rows.append(("us upstream restarted -> us1 answers from us again", "n/a" if v is None else f"{v:.3f} s",
                 "", ""))
    if rc:
        notes.append(f"recovery: upstream listening {rc['listen_s']:.3f} s after its launch; first local "
                     f"answer {fmt_s(rc['back_after_listen_s'])} "
                     f"after that ({rc['polls']} polls every {args.recovery_poll_ms:g} ms); "
                     f"{rc['not_local_after']} of the next 20 GETs not served by us"
                     + (f"; non-200 while recovering: {rc['bad']}" if rc["bad"] else ""))
    return rows, notes


def print_report(res: dict, args: argparse.Namespace, busy: int | None, total_s: float) -> int:
    rows, notes = build_rows(res, args)
    setup = (f"{busy_note(busy)}); {build_kind(args)} build; 3 regions (us, eu, ap), one node and one "
             f"upstream each, on loopback; health checks every {args.hc_interval_ms} ms; "
             f"wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s; {args.samples} sequential "
             f"GETs per latency figure; run took {total_s:.0f} s")
    return print_table(rows, notes, args.markdown, setup)


# --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", required=True, help="meridian binary")
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    p.add_argument("--samples", type=int, default=2000, help="sequential GETs per latency figure")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    p.add_argument("--load-seconds", type=float, default=10.0, help="length of the kill-under-load phase")
    p.add_argument("--kill-fraction", type=float, default=0.5, help="kill the upstream this far into the load")
    p.add_argument("--load-rps", type=float, default=300.0, help="GETs per second during the kill phase")
    p.add_argument("--load-threads", type=int, default=3, help="GET threads during the kill phase")
    p.add_argument("--post-rps", type=float, default=20.0, help="POSTs per second during the kill phase")
    p.add_argument("--hc-interval-ms", type=int, default=200, help="health_check interval_ms")
    p.add_argument("--hc-timeout-ms", type=int, default=100, help="health_check timeout_ms")
    p.add_argument("--recovery-poll-ms", type=float, default=10.0, help="GET interval while recovering")
    p.add_argument("--recovery-timeout", type=float, default=15.0)
    p.add_argument("--latency-timeout", type=float, default=30.0, help="bound per latency figure")
    p.add_argument("--formation-timeout", type=float, default=30.0)
    p.add_argument("--max-seconds", type=int, default=120, help="hard limit for the whole run")
    p.add_argument("--log-level", default="info", help="node --log-level")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir (logs) after a successful run")
    p.add_argument("--fail-on-miss", action="store_true", help="exit 3 if any figure misses its target")
    a = p.parse_args()
    if a.samples < 1 or a.duration < 1 or a.connections < 1 or a.wrk_threads < 1:
        p.error("--samples, --duration, --connections and --wrk-threads must be >= 1")
    if a.load_seconds < 2 or not 0.1 <= a.kill_fraction <= 0.9:
        p.error("--load-seconds must be >= 2 and --kill-fraction within 0.1..0.9")
    if a.load_rps <= 0 or a.post_rps <= 0 or a.load_threads < 1:
        p.error("--load-rps, --post-rps and --load-threads must be positive")
    return a


def main() -> int:
    args = parse_args()
    if not (os.path.isfile(args.bin) and os.access(args.bin, os.X_OK)):
        log(f"ERROR: {args.bin} is not an executable file")
        return 1
    if shutil.which("wrk") is None:
        log("ERROR: wrk not found (scripts/bench-failover.sh installs it)")
        return 1
    return run_bench(args, Bench, print_report, lambda b: bool(b.res))


if __name__ == "__main__":
    sys.exit(main())
