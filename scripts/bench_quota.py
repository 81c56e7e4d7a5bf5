#!/usr/bin/env python3
"""Global rate limit benchmark for Meridian: real processes on loopback.

Run it through scripts/bench-quota.sh, which finds or builds the binary and the limiter
microbenchmark and installs wrk first.

One quota, `per-tenant` (key header:x-tenant, LIMIT requests per WINDOW_MS, on_partition
local_share), on a route in front of one `meridian upstream` per region; all load uses one tenant.
Measured in one run, in this order:
  1. Meridian's global limit under uneven load: a 3-region cluster (us1, eu1, ap1, launched as
     scripts/bench_failover.py does); once every node holds a lease on the current window, three
     wrk (1 thread each, connections 4:2:1) against us1, eu1, ap1 at once. After WARMUP s, the
     nodes' meridian_quota_decisions_total{decision="admitted"} are scraped at the same phase of
     two windows DURATION s apart; admitted / (limit x windows) has target 0.95-1.05. Also each
     node's share of the admitted requests (ideal: its share of the requests offered), the offered
     req/s and the hot key's leases from us1's /quotas.
  2. A naive per-node limiter (what Kong's or APISIX's "local" policies do): the same three nodes
     started standalone, each enforcing the whole limit alone; same load, same measurement.
     admitted / (limit x windows) is expected near 3; Meridian / naive is printed too.
  3. The limiter microbenchmark (node/examples/limiter_bench.rs): ns per request per case;
     target request_check_one_thread < 100 ns.

Progress goes to stderr; stdout carries only the results.
Python 3.11 standard library only. Process handling, the report helpers and the run loop come
from scripts/bench_control_plane.py; the cluster launch, upstreams and wrk parsing from
scripts/bench_failover.py (both imported).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

# Shared with the other benchmarks (same directory, on sys.path when run as a script); no
# __pycache__ left in scripts/ by the import.
sys.dont_write_bytecode = True
import bench_failover  # noqa: E402
from bench_control_plane import (  # noqa: E402
    BenchError,
    Node,
    build_kind,
    busy_note,
    log,
    print_table,
    read_lines,
    run_bench,
    tail,
    warn,
)
from bench_failover import REGIONS, SERVICE, Http, get_text, metric_sum, parse_wrk  # noqa: E402

mono = time.monotonic

QUOTA = "per-tenant"
TENANT = "t"
WEIGHTS = {"us": 4, "eu": 2, "ap": 1}  # wrk connections per node, in units
NODE_IDS = {r: f"{r}1" for r in REGIONS}

TARGET_GLOBAL = (0.95, 1.05)  # admitted / (limit x windows), Meridian
TARGET_CHECK_NS = 100.0  # request_check_one_thread
CHECK_CASE = "request_check_one_thread"

MICRO_RE = re.compile(r"^(\w+) ([0-9.]+)$")


def counter_prefix(decision: str) -> str:
    return f'meridian_quota_decisions_total{{quota="{QUOTA}",decision="{decision}"}} '


def quota_doc(doc: object) -> dict:
    """The `per-tenant` entry of a /quotas answer, {} if absent."""
    q = (doc.get("quotas") or {}).get(QUOTA) if isinstance(doc, dict) else None
    return q if isinstance(q, dict) else {}


def in_range(v: float | None, lo: float, hi: float) -> str:
    return "n/a" if v is None else ("PASS" if lo <= v <= hi else "MISS")


class Bench(bench_failover.Bench):
    """The failover benchmark's cluster (certs, upstreams, launch, formation) with a quota table."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        # The parent names its scratch dir after itself; use one named after this benchmark.
        old, self.tmp = self.tmp, tempfile.mkdtemp(prefix="meridian-quota-bench.")
        os.rmdir(old)
        self.tls = os.path.join(self.tmp, "tls")
        self.routes_path = os.path.join(self.tmp, "routes.json")

    def table(self) -> dict:
        return {
            "services": {SERVICE: {
                "endpoints": {r: [self.ups[r].url()] for r in REGIONS},
                "timeout_ms": 3000,
                "retries": 1,
            }},
            "routes": [{"name": "all", "path_prefix": "/", "service": SERVICE, "quota": QUOTA}],
            "quotas": {QUOTA: {"key": "header:x-tenant", "limit": self.args.limit,
                               "window_ms": self.args.window_ms, "on_partition": "local_share"}},
        }

    def quotas(self, n: Node) -> dict:
        """The quota's entry in n's GET /quotas, {} if it did not answer. Asked twice: the node may
        have closed the idle keep-alive connection during the load."""
        for _ in range(2):
            st, doc = n.admin.try_get("/quotas", 2.0)
            if st == 200:
                return quota_doc(doc)
        return {}

    # -- standalone nodes (naive per-node limiter) ---------------------------------------------

    def launch_standalone(self) -> None:
        self.nodes = {}
        for r in REGIONS:
            nid = NODE_IDS[r]
            n = Node(id=nid, region=r, out=os.path.join(self.tmp, f"naive-{nid}.out"),
                     err=os.path.join(self.tmp, f"naive-{nid}.log"),
                     data_dir=os.path.join(self.tmp, "data-naive", nid))
            n.proc = self.procs.start([self.bin, "node", "--id", nid, "--region", r,
                                       "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                                       "--data-dir", n.data_dir, "--routes", self.routes_path,
                                       "--log-level", self.args.log_level],
                                      n.out, n.err, self.tmp)
            self.nodes[r] = n
        log("naive: launched standalone us1, eu1, ap1 (pids "
            f"{', '.join(str(n.proc.pid) for n in self.nodes.values())})")

    def wait_standalone(self) -> None:
        deadline = mono() + self.args.formation_timeout
        last = ""
        while mono() < deadline:
            self.check_nodes()
            for n in self.nodes.values():
                if n.admin is None:
                    n.scan_stdout()
            if all(n.admin for n in self.nodes.values()):
                ready = [n.admin.try_get("/readyz", 1.0)[0] == 200 for n in self.nodes.values()]
                modes = [self.quotas(n).get("mode") for n in self.nodes.values()]
                if all(ready) and modes == ["standalone"] * len(REGIONS):
                    return
                last = f"ready={ready} quota modes={modes}"
            time.sleep(0.02)
        raise BenchError(f"standalone nodes not ready after {self.args.formation_timeout:.0f} s "
                         f"({last or 'admin addresses not printed yet'}); us1 log:\n"
                         f"{tail(self.nodes['us'].err)}")

    # -- cluster leases ------------------------------------------------------------------------

    def wait_leases(self) -> float:
        """Until every node holds a lease on the current window and the split names all 3 nodes."""
        t0 = mono()
        want = set(NODE_IDS.values())
        last = {}
        while mono() - t0 < self.args.lease_timeout:
            self.check_nodes()
            docs = {n.id: self.quotas(n) for n in self.nodes.values()}
            last = {k: ((q.get("local") or {}).get("lease_valid"), sorted(q.get("leases") or {}))
                    for k, q in docs.items()}
            if all(valid is True and set(nodes) == want for valid, nodes in last.values()):
                return mono() - t0
            time.sleep(0.05)
        raise BenchError(f"leases not valid on every node within {self.args.lease_timeout:.0f} s "
                         f"(lease_valid, lease holders per node): {last}")

    # -- the load and the measurement ----------------------------------------------------------

    def check_served(self) -> None:
        """One request per node with the tenant header: a 200 or a 429, nothing else."""
        for r in REGIONS:
            a = Http(self.nodes[r].http).request("GET", "/warm", {"x-tenant": TENANT})
            if a.status not in (200, 429):
                raise BenchError(f"{NODE_IDS[r]}: GET /warm answered {a.status}: {a.body[:200]!r} {a.error}")

    def scrape(self) -> dict:
        """Each node's admitted and rejected counters, and when the scrapes were taken."""
        t0 = time.time()
        out: dict = {"nodes": {}}
        for r in REGIONS:
            text = get_text(self.nodes[r].admin_addr, "/metrics")
            if counter_prefix("admitted") not in text:
                raise BenchError(f"{NODE_IDS[r]} /metrics has no {counter_prefix('admitted').strip()}")
            out["nodes"][r] = (metric_sum(text, counter_prefix("admitted")),
                               metric_sum(text, counter_prefix("rejected")))
        out["t0"], out["t1"] = t0, time.time()
        return out

    def sleep_until(self, unix_s: float, wrks: dict[str, subprocess.Popen]) -> None:
        while (left := unix_s - time.time()) > 0:
            for r, p in wrks.items():
                if p.poll() is not None:
                    raise BenchError(f"wrk against {NODE_IDS[r]} exited early ({p.returncode})")
            self.check_nodes()
            time.sleep(min(left, 0.1))

    def measure(self, label: str) -> dict:
        a = self.args
        win_s = a.window_ms / 1000
        windows = a.windows
        # Long enough to cover the warm-up, the wait for the scrape phase and the measured windows.
        wrk_s = math.ceil(a.warmup + (windows + 1) * win_s + 2)
        wrks: dict[str, subprocess.Popen] = {}
        outs: dict[str, str] = {}
        conns = {r: WEIGHTS[r] * a.unit_connections for r in REGIONS}
        log(f"{label}: wrk -t1 -c{'/'.join(str(conns[r]) for r in REGIONS)} -d{wrk_s}s "
            f"-H 'x-tenant: {TENANT}' against us1/eu1/ap1; {a.warmup:g} s warm-up, then {windows} "
            f"window(s) of {a.window_ms} ms measured")
        t_start = time.time()
        for r in REGIONS:
            outs[r] = os.path.join(self.tmp, f"wrk-{label}-{NODE_IDS[r]}.txt")
            wrks[r] = self.procs.start(["wrk", "-t1", f"-c{conns[r]}", f"-d{wrk_s}s", "--latency",
                                        "-H", f"x-tenant: {TENANT}",
                                        f"http://{self.nodes[r].http}/quota/{label}"],
                                       outs[r], outs[r] + ".err", self.tmp)
        # Scrape at the same phase of a window at both ends, so the delta is whole windows.
        phase = a.scrape_phase * win_s
        first = math.ceil((t_start + a.warmup - phase) / win_s) * win_s + phase
        self.sleep_until(first, wrks)
        before = self.scrape()
        # us1's view of the hot key once per measured window, at the same phase (the last one just
        # after the final scrape, which must not wait for it).
        hots: list[dict | None] = []  # None: /quotas did not answer
        for k in range(1, windows + 1):
            self.sleep_until(first + k * win_s, wrks)
            if k == windows:
                after = self.scrape()
            doc = self.quotas(self.nodes["us"])
            hots.append(None if not doc else next(
                (h for h in doc.get("hot_keys") or [] if isinstance(h, dict) and h.get("key") == TENANT), {}))
        lag_ms = max(abs(s["t0"] - t) * 1000 for s, t in ((before, first), (after, first + windows * win_s)))
        spread_ms = max((s["t1"] - s["t0"]) * 1000 for s in (before, after))
        if lag_ms + spread_ms > 0.25 * a.window_ms:
            warn(f"{label}: scrapes {lag_ms:.0f} ms off their target phase, taking {spread_ms:.0f} ms: "
                 "the busy machine blurs the window boundaries")

        w: dict[str, dict] = {}
        for r, p in wrks.items():
            try:
                p.wait(timeout=wrk_s + 15 - (time.time() - t_start))
            except subprocess.TimeoutExpired as e:
                raise BenchError(f"wrk against {NODE_IDS[r]} ran past {wrk_s + 15} s") from e
            with open(outs[r], encoding="utf-8", errors="replace") as f:
                parsed = parse_wrk(f.read())
            if p.returncode != 0 or parsed is None:
                raise BenchError(f"wrk against {NODE_IDS[r]} failed ({p.returncode}):\n{tail(outs[r] + '.err')}")
            w[r] = parsed
        admitted = {r: after["nodes"][r][0] - before["nodes"][r][0] for r in REGIONS}
        rejected = {r: after["nodes"][r][1] - before["nodes"][r][1] for r in REGIONS}
        total = sum(admitted.values())
        offered = sum(w[r]["rps"] for r in REGIONS)
        res = {
            "windows": windows, "admitted": admitted, "rejected": rejected, "total": total,
            "ratio": total / (a.limit * windows),
            "share": {r: (admitted[r] / total if total else 0.0) for r in REGIONS},
            "rps": {r: w[r]["rps"] for r in REGIONS}, "offered": offered,
            "demand": {r: (w[r]["rps"] / offered if offered else 0.0) for r in REGIONS},
            "hots": hots, "leases": doc.get("leases"), "lag_ms": lag_ms, "spread_ms": spread_ms,
        }
        log(f"{label}: admitted {total:.0f} in {windows} window(s) = {res['ratio']:.3f} x limit; "
            f"per node {', '.join(f'{NODE_IDS[r]} {admitted[r]:.0f}' for r in REGIONS)}; "
            f"offered {res['offered']:.0f} req/s")
        return res

    # -- limiter microbenchmark ----------------------------------------------------------------

    def microbench(self) -> dict:
        path = self.args.limiter_bench
        out = os.path.join(self.tmp, "limiter_bench.txt")
        log(f"microbenchmark: {path}")
        p = self.procs.start([path], out, out + ".err", self.tmp)
        try:
            p.wait(timeout=self.args.micro_timeout)
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"limiter_bench ran past {self.args.micro_timeout:.0f} s") from e
        cases = {m.group(1): float(m.group(2))
                 for line in read_lines(out) if (m := MICRO_RE.match(line.strip()))}
        if p.returncode != 0 or not cases:
            raise BenchError(f"limiter_bench failed ({p.returncode}):\n{tail(out + '.err')}")
        log("microbenchmark: " + ", ".join(f"{k} {v:.1f} ns" for k, v in cases.items()))
        return cases

    # -- whole run -----------------------------------------------------------------------------

    def run(self) -> None:
        res = self.res
        self.setup()
        t0 = self.launch()
        self.wait_formed(t0)
        took = self.wait_leases()
        log(f"every node holds a lease on the current window ({took:.3f} s after formation)")
        self.check_served()
        res["meridian"] = self.measure("meridian")
        self.procs.stop([n.proc for n in self.nodes.values()])

        self.launch_standalone()
        self.wait_standalone()
        self.check_served()
        res["naive"] = self.measure("naive")
        self.procs.stop([n.proc for n in self.nodes.values()])

        if self.args.limiter_bench:
            res["micro"] = self.microbench()


# --------------------------------------------------------------------------------------------
# report


def per_node(d: dict, fmt: str) -> str:
    return ", ".join(f"{NODE_IDS[r]} {format(d[r], fmt)}" for r in REGIONS if r in d)


def build_rows(res: dict, args: argparse.Namespace) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    conns = "/".join(str(WEIGHTS[r] * args.unit_connections) for r in REGIONS)
    lo, hi = TARGET_GLOBAL

    m = res.get("meridian")
    v = m["ratio"] if m else None
    rows.append(("Meridian, load 4:2:1 on us1/eu1/ap1: admitted / (limit x windows)",
                 "n/a" if v is None else f"{v:.3f}", f"{lo:g}–{hi:g}", in_range(v, lo, hi)))
    if m:
        # Busiest = most requests offered: closed-loop wrk on shared cores does not offer exactly
        # 4:2:1, so the ideal share is the node's share of what was actually offered.
        top = max(REGIONS, key=lambda r: m["rps"][r])
        rows.append((f"Meridian: busiest node's ({NODE_IDS[top]}) share of admitted (ideal: its share "
                     f"of the offered load, {m['demand'][top]:.2f})", f"{m['share'][top]:.2f}", "", ""))
        rows.append((f"Meridian: offered load (wrk -c{conns})", f"{m['offered']:.0f} req/s", "", ""))
        seen = [h["leases"] for h in m["hots"] if h and isinstance(h.get("leases"), dict) and h["leases"]]
        mean = {n: sum(s.get(n, 0) for s in seen) / len(seen) for n in NODE_IDS.values()} if seen else {}
        rows.append((f"Meridian: hot key leases ({'/'.join(NODE_IDS.values())}), mean over "
                     f"{len(seen)}/{len(m['hots'])} windows", "/".join(f"{v:.0f}" for v in mean.values()) or "n/a",
                     "", ""))
        notes.append(f"Meridian: admitted {m['total']:.0f} in {m['windows']} window(s) of {args.window_ms} ms, "
                     f"limit {args.limit}; per node {per_node(m['admitted'], '.0f')}; shares of admitted "
                     f"{per_node(m['share'], '.2f')} vs shares of the offered load {per_node(m['demand'], '.2f')} "
                     f"(connections 4:2:1); rejected {per_node(m['rejected'], '.0f')}")
        last = m["hots"][-1] or {}
        unanswered = sum(1 for h in m["hots"] if h is None)
        notes.append(f"Meridian: offered req/s {per_node(m['rps'], '.0f')} (admitted and 429 alike); us1's "
                     f"/quotas once per window: hot key {TENANT!r} leases "
                     + "; ".join("/".join(str(s.get(n, "-")) for n in NODE_IDS.values()) for s in seen)
                     + f"; after the last scrape: equal split {m['leases']}, hot key demand per window as last "
                     f"reported {last.get('demand') or 'n/a'}")
        if len(seen) < len(m["hots"]):
            notes.append(f"Meridian: no hot key leases in {len(m['hots']) - len(seen)} window(s): us1's /quotas "
                         f"did not answer in {unanswered}, the key was on the equal split in the others")
    n = res.get("naive")
    rows.append(("naive per-node limiter (3 standalone nodes): admitted / (limit x windows)",
                 "n/a" if not n else f"{n['ratio']:.3f}", "≈ 3", ""))
    if n:
        rows.append((f"naive: offered load (wrk -c{conns})", f"{n['offered']:.0f} req/s", "", ""))
        notes.append(f"naive: admitted {n['total']:.0f} in {n['windows']} window(s); per node "
                     f"{per_node(n['admitted'], '.0f')}; offered req/s {per_node(n['rps'], '.0f')}; each "
                     f"node enforces the whole limit of {args.limit}, as a per-node (\"local\") policy does")
    rows.append(("Meridian / naive admitted", "n/a" if not (m and n and n["ratio"]) else f"{m['ratio'] / n['ratio']:.2f}",
                 "", ""))
    for what, d in (("Meridian", m), ("naive", n)):
        if d:
            notes.append(f"{what}: scrapes taken {d['lag_ms']:.0f} ms off their target phase "
                         f"({args.scrape_phase:g} of a window), {d['spread_ms']:.0f} ms for the three nodes")

    micro = res.get("micro")
    if micro:
        for case, ns in micro.items():
            target = f"< {TARGET_CHECK_NS:g} ns" if case == CHECK_CASE else ""
            result = ("PASS" if ns < TARGET_CHECK_NS else "MISS") if target else ""
            rows.append((f"limiter microbenchmark: {case}", f"{ns:.1f} ns", target, result))
        if CHECK_CASE not in micro:
            rows.append((f"limiter microbenchmark: {CHECK_CASE}", "n/a", f"< {TARGET_CHECK_NS:g} ns", "n/a"))
    else:
        rows.append((f"limiter microbenchmark: {CHECK_CASE}", "n/a", f"< {TARGET_CHECK_NS:g} ns", "n/a"))
        if not args.limiter_bench:
            notes.append("limiter microbenchmark skipped: no limiter_bench binary (cargo missing?)")
    return rows, notes


def print_report(res: dict, args: argparse.Namespace, busy: int | None, total_s: float) -> int:
    rows, notes = build_rows(res, args)
    setup = (f"{busy_note(busy)}); {build_kind(args)} build; 3 regions (us, eu, ap), one node and one "
             f"upstream each, on loopback; quota {args.limit} per {args.window_ms} ms on one tenant; "
             f"{args.warmup:g} s warm-up, {args.windows} window(s) measured; run took {total_s:.0f} s")
    return print_table(rows, notes, args.markdown, setup)


# --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", required=True, help="meridian binary")
    p.add_argument("--limiter-bench", default="", help="limiter_bench example binary ('' to skip)")
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    p.add_argument("--limit", type=int, default=1000, help="quota limit per window")
    p.add_argument("--window-ms", type=int, default=1000, help="quota window")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the first scrape")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured (whole windows)")
    p.add_argument("--unit-connections", type=int, default=2,
                   help="wrk connections against ap1; eu1 gets twice, us1 four times as many")
    p.add_argument("--scrape-phase", type=float, default=0.5,
                   help="where in a window the counters are scraped (0..1)")
    p.add_argument("--formation-timeout", type=float, default=30.0)
    p.add_argument("--lease-timeout", type=float, default=15.0)
    p.add_argument("--micro-timeout", type=float, default=60.0, help="bound on the microbenchmark")
    p.add_argument("--max-seconds", type=int, default=120, help="hard limit for the whole run")
    p.add_argument("--log-level", default="info", help="node --log-level")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir (logs) after a successful run")
    p.add_argument("--fail-on-miss", action="store_true", help="exit 3 if any figure misses its target")
    a = p.parse_args()
    if a.limit < 1 or a.window_ms < 1 or a.unit_connections < 1:
        p.error("--limit, --window-ms and --unit-connections must be >= 1")
    if a.warmup < 0 or not 0 <= a.scrape_phase < 1:
        p.error("--warmup must be >= 0 and --scrape-phase within 0..1")
    a.windows = int(a.duration * 1000 // a.window_ms)
    if a.windows < 1:
        p.error("--duration must cover at least one window")
    return a


def main() -> int:
    args = parse_args()
    for path, what in ((args.bin, "meridian"), (args.limiter_bench, "limiter_bench")):
        if path and not (os.path.isfile(path) and os.access(path, os.X_OK)):
            log(f"ERROR: {what}: {path} is not an executable file")
            return 1
    if args.limiter_bench:
        args.limiter_bench = os.path.realpath(args.limiter_bench)
    if shutil.which("wrk") is None:
        log("ERROR: wrk not found (scripts/bench-quota.sh installs it)")
        return 1
    return run_bench(args, Bench, print_report, lambda b: bool(b.res))


if __name__ == "__main__":
    sys.exit(main())
