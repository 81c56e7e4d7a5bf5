#!/usr/bin/env python3
"""Control-plane benchmark for Meridian: real processes on loopback.

Run it through scripts/bench-control-plane.sh, which finds or builds the binary first.

Measures, with the target next to each figure:
  1. cluster formation: from launching 3 nodes until all 3 answer GET /readyz 200 and their
     GET /cluster agree on one leader (target < 5 s). Measured on two fresh clusters (A, B);
     the worse sample is the figure.
  2. write propagation: N writes (PUT /routes) sent to a FOLLOWER; for each, the time from
     sending the PUT until GET /routes on every node shows the new version (one thread per node
     polling over keep-alive). Latency of a write = max over the nodes. p50/p99/max
     (target p99 < 100 ms).
  3. leader failover: SIGKILL the leader (cluster A), then PUT to a surviving follower in a loop
     (each PUT bounded); time from the kill until a write commits, i.e. the first 200 or the
     survivor's routing version moving, whichever is seen first (target < 3 s).
  4. dead-node detection: on a fresh 3-node cluster B, SIGKILL a follower; time until a
     survivor's GET /cluster shows it "live": false (target < 2 s).

Progress goes to stderr; stdout carries only the results.
Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

mono = time.monotonic

LISTEN_RE = re.compile(r"^meridian node (\S+) listening http=(\S+) admin=(\S+)\s*$")
CLUSTER_RE = re.compile(r"^meridian node (\S+) cluster gossip=(\S+) peer=(\S+)\s*$")
UPSTREAM_RE = re.compile(r"^meridian upstream (\S+) listening http=(\S+)\s*$")

TARGET_FORMATION_S = 5.0
TARGET_WRITE_P99_MS = 100.0
TARGET_FAILOVER_S = 3.0
TARGET_DETECT_S = 2.0


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def utc_now() -> str:
    """Wall-clock time as the nodes' logs print it, to line events up with them."""
    t = time.time()
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def warn(msg: str) -> None:
    print(f"[bench] WARNING: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A measurement could not be made (as opposed to a figure missing its target)."""


class OutOfTime(BaseException):
    """Raised by the SIGALRM watchdog; BaseException so no `except Exception` swallows it."""


# --------------------------------------------------------------------------------------------
# processes


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG(SIGKILL): the node dies even if this script is SIGKILLed itself.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort; the normal cleanup path still runs
        pass


def node_env() -> dict[str, str]:
    # A stray MERIDIAN_CONFIG or MERIDIAN_ADMIN_TOKEN_FILE in the caller's environment would
    # change what we measure (or make every admin call 401): start from a clean slate.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")}
    env.setdefault("RUST_BACKTRACE", "0")
    return env


class Procs:
    """Every process we started; `stop_all` ends them, TERM first, then KILL."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], out_path: str, err_path: str, cwd: str) -> subprocess.Popen:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            p = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=node_env(),
                preexec_fn=_die_with_parent,
            )
        self.procs.append(p)
        return p

    def stop(self, procs: list[subprocess.Popen], grace: float = 2.0) -> None:
        for p in procs:
            if p.poll() is None:
                try:
                    p.terminate()
                except ProcessLookupError:
                    pass
        deadline = mono() + grace
        for p in procs:
            left = deadline - mono()
            try:
                p.wait(timeout=max(left, 0.01))
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    warn(f"pid {p.pid} did not exit after SIGKILL")

    def stop_all(self) -> None:
        self.stop(self.procs)


def read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def tail(path: str, n: int = 15) -> str:
    return "\n".join("    " + line for line in read_lines(path)[-n:])


def free_udp_port() -> int:
    # Small race between closing and the node binding it; a node that fails to bind exits and
    # is reported with its log, and a rerun is the remedy.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# admin API client


class Admin:
    """One keep-alive HTTP/1.1 connection to a node's admin API."""

    def __init__(self, addr: str, timeout: float = 2.0) -> None:
        host, port = addr.rsplit(":", 1)
        self.host, self.port = host.strip("[]"), int(port)
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                timeout: float | None = None) -> tuple[int, object]:
        """(status, parsed JSON or None). Raises OSError / HTTPException on transport failure."""
        t = self.timeout if timeout is None else timeout
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=t)
        else:
            self.conn.timeout = t
            if self.conn.sock is not None:
                self.conn.sock.settimeout(t)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.will_close:
            self.close()
        try:
            doc = json.loads(data) if data else None
        except ValueError:
            doc = None
        return resp.status, doc

    def get(self, path: str, timeout: float | None = None) -> tuple[int, object]:
        return self.request("GET", path, timeout=timeout)

    def try_get(self, path: str, timeout: float | None = None) -> tuple[int, object]:
        """Like get, but (0, None) on any transport failure."""
        try:
            return self.get(path, timeout)
        except (OSError, http.client.HTTPException):
            return 0, None


def routes_version(doc: object) -> int | None:
    if isinstance(doc, dict) and isinstance(doc.get("version"), int):
        return doc["version"]
    return None


def cluster_leader(doc: object) -> str | None:
    if isinstance(doc, dict) and isinstance(doc.get("raft"), dict):
        leader = doc["raft"].get("leader")
        return leader if isinstance(leader, str) else None
    return None


def member_live(doc: object, node_id: str) -> bool | None:
    if not isinstance(doc, dict):
        return None
    for m in doc.get("members") or []:
        if isinstance(m, dict) and m.get("id") == node_id:
            return bool(m.get("live"))
    return None


# --------------------------------------------------------------------------------------------
# cluster


@dataclass
class Node:
    id: str
    region: str
    out: str
    err: str
    data_dir: str
    proc: subprocess.Popen | None = None
    http: str | None = None
    admin_addr: str | None = None
    gossip: str | None = None
    peer: str | None = None
    admin: Admin | None = None
    killed: bool = False

    def scan_stdout(self) -> None:
        for line in read_lines(self.out):
            if m := LISTEN_RE.match(line):
                self.http, self.admin_addr = m.group(2), m.group(3)
            elif m := CLUSTER_RE.match(line):
                self.gossip, self.peer = m.group(2), m.group(3)
        if self.admin_addr and self.admin is None:
            self.admin = Admin(self.admin_addr)

    def check_alive(self) -> None:
        if self.proc is not None and not self.killed and self.proc.poll() is not None:
            raise BenchError(f"node {self.id} exited with status {self.proc.returncode}; "
                             f"last log lines ({self.err}):\n{tail(self.err)}")


@dataclass
class Cluster:
    name: str
    nodes: list[Node] = field(default_factory=list)

    def by_id(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise BenchError(f"cluster {self.name}: no node {node_id}")

    def live_nodes(self) -> list[Node]:
        return [n for n in self.nodes if not n.killed]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bin = os.path.realpath(args.bin)
        self.procs = Procs()
        self.tmp = tempfile.mkdtemp(prefix="meridian-cp-bench.")
        self.tls = os.path.join(self.tmp, "tls")
        self.routes_path = os.path.join(self.tmp, "routes.json")
        self.table: dict = {}
        self.failed = False
        # Filled as figures are measured, so a run that fails half-way still reports what it got.
        self.res: dict = {"formation": []}

    # -- setup ---------------------------------------------------------------------------------

    def run_quick(self, argv: list[str], what: str) -> None:
        r = subprocess.run(argv, cwd=self.tmp, env=node_env(), capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise BenchError(f"{what} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")

    def setup(self) -> None:
        ids = ",".join(f"n{i}" for i in (1, 2, 3))
        self.run_quick([self.bin, "certs", "--out", self.tls, "--nodes", ids], "meridian certs")

        out, err = os.path.join(self.tmp, "upstream.out"), os.path.join(self.tmp, "upstream.log")
        up = self.procs.start([self.bin, "upstream", "--listen", "127.0.0.1:0", "--name", "up"],
                              out, err, self.tmp)
        deadline = mono() + 10
        up_addr = None
        while up_addr is None:
            for line in read_lines(out):
                if m := UPSTREAM_RE.match(line):
                    up_addr = m.group(2)
            if up_addr:
                break
            if up.poll() is not None:
                raise BenchError(f"upstream exited ({up.returncode}):\n{tail(err)}")
            if mono() > deadline:
                raise BenchError(f"upstream printed no listening line in 10 s:\n{tail(err)}")
            time.sleep(0.02)
        log(f"upstream listening on {up_addr}")
        url = f"http://{up_addr}"
        self.table = {
            "services": {"echo": {"endpoints": {"us": [url], "eu": [url]}}},
            "routes": [{"name": "all", "path_prefix": "/", "service": "echo"}],
        }
        with open(self.routes_path, "w", encoding="utf-8") as f:
            json.dump(self.table, f)

    def launch(self, name: str) -> tuple[Cluster, float]:
        """Start a 3-node cluster; returns it and the monotonic launch time (before the first exec)."""
        c = Cluster(name)
        seed_port = free_udp_port()
        seed = f"127.0.0.1:{seed_port}"
        for i, region in ((1, "us"), (2, "us"), (3, "eu")):
            nid = f"n{i}"
            c.nodes.append(Node(
                id=nid, region=region,
                out=os.path.join(self.tmp, f"{name}-{nid}.out"),
                err=os.path.join(self.tmp, f"{name}-{nid}.log"),
                data_dir=os.path.join(self.tmp, f"data-{name}", nid),
            ))
        argvs = []
        for n in c.nodes:
            argv = [self.bin, "node", "--id", n.id, "--region", n.region,
                    "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                    "--gossip", seed if n.id == "n1" else "127.0.0.1:0",
                    "--peer", "127.0.0.1:0", "--expect", "3",
                    "--tls-dir", self.tls, "--data-dir", n.data_dir,
                    "--routes", self.routes_path, "--log-level", self.args.log_level]
            if n.id != "n1":
                argv += ["--seeds", seed]
            argvs.append(argv)
        t0 = mono()
        for n, argv in zip(c.nodes, argvs):
            n.proc = self.procs.start(argv, n.out, n.err, self.tmp)
        log(f"cluster {name}: launched n1, n2, n3 (pids "
            f"{', '.join(str(n.proc.pid) for n in c.nodes)}), seed gossip {seed}")
        return c, t0

    # -- 1. formation --------------------------------------------------------------------------

    def wait_formed(self, c: Cluster, t0: float) -> tuple[float, str]:
        """Seconds from launch until all 3 are ready and agree on a leader; and that leader."""
        deadline = t0 + self.args.formation_timeout
        last = ""
        while mono() < deadline:
            for n in c.nodes:
                n.check_alive()
                if n.admin is None:
                    n.scan_stdout()
            if all(n.admin for n in c.nodes):
                ready = [n.admin.try_get("/readyz", 1.0)[0] == 200 for n in c.nodes]
                docs = [n.admin.try_get("/cluster", 1.0)[1] for n in c.nodes]
                now = mono()
                leaders = [cluster_leader(d) for d in docs]
                roles = [(d.get("raft") or {}).get("role") if isinstance(d, dict) else None for d in docs]
                if "standalone" in roles:
                    raise BenchError(f"{self.bin} runs the nodes standalone (no cluster mode in this "
                                     "build?); rebuild it or point MERIDIAN_BIN at a newer binary. "
                                     f"n1 log:\n{tail(c.nodes[0].err, 5)}")
                if all(ready) and leaders[0] is not None and len(set(leaders)) == 1:
                    return now - t0, leaders[0]
                last = f"ready={ready} leaders={leaders}"
            time.sleep(self.args.poll_ms / 1000)
        raise BenchError(f"cluster {c.name} not formed after {self.args.formation_timeout:.0f} s "
                         f"({last or 'admin addresses not printed yet'}); n1 log:\n{tail(c.nodes[0].err)}")

    def wait_settled(self, c: Cluster, leader: str) -> None:
        """Before breaking things: 3 voters, all members live everywhere, one routing version."""
        deadline = mono() + 15
        last = ""
        while mono() < deadline:
            for n in c.nodes:
                n.check_alive()
            docs = [n.admin.try_get("/cluster", 1.0)[1] for n in c.nodes]
            ok = all(isinstance(d, dict) for d in docs)
            if ok:
                voters = docs[0]["raft"].get("voters") or []
                leaders = {cluster_leader(d) for d in docs}
                lives = [member_live(d, m.id) for d in docs for m in c.nodes]
                versions = {(d.get("routing") or {}).get("version") for d in docs}
                last = f"voters={voters} leaders={leaders} live={lives} versions={versions}"
                if (len(voters) == 3 and leaders == {leader} and all(lives)
                        and len(versions) == 1 and None not in versions and 0 not in versions):
                    return
            time.sleep(0.05)
        raise BenchError(f"cluster {c.name} did not settle within 15 s: {last}")

    # -- 2. write propagation ------------------------------------------------------------------

    def table_for(self, i: int) -> bytes:
        t = json.loads(json.dumps(self.table))
        t["routes"].append({"name": f"bench-{i}", "path_prefix": f"/__bench/{i}", "service": "echo"})
        return json.dumps(t).encode()

    def measure_writes(self, c: Cluster, leader: str) -> dict:
        follower = next(n for n in c.nodes if n.id != leader)
        log(f"writes: {self.args.writes} x PUT /routes to follower {follower.id} "
            f"(leader {leader}); polling GET /routes on all 3 every {self.args.write_poll_ms} ms")
        pollers = [Admin(n.admin_addr, 1.0) for n in c.nodes]
        writer = Admin(follower.admin_addr, self.args.write_timeout)
        status, doc = writer.get("/routes")
        version = routes_version(doc)
        if status != 200 or version is None:
            raise BenchError(f"GET /routes on {follower.id}: {status} {doc}")
        interval = self.args.write_poll_ms / 1000
        lat, ack, timeouts = [], [], 0

        for i in range(1, self.args.writes + 1):
            body = self.table_for(i)
            target = version + 1
            seen: list[float | None] = [None] * len(pollers)
            go = threading.Event()
            stop = threading.Event()

            def poll(k: int, adm: Admin) -> None:
                go.wait(5)
                end = mono() + self.args.write_timeout
                while not stop.is_set() and mono() < end:
                    st, d = adm.try_get("/routes", 1.0)
                    v = routes_version(d) if st == 200 else None
                    if v is not None and v >= target:
                        seen[k] = mono()
                        return
                    time.sleep(interval)

            threads = [threading.Thread(target=poll, args=(k, a), daemon=True)
                       for k, a in enumerate(pollers)]
            for t in threads:
                t.start()
            go.set()
            t_send = mono()
            try:
                st, d = writer.request("PUT", "/routes", body=body)
            except (OSError, http.client.HTTPException) as e:
                stop.set()
                raise BenchError(f"write {i}: PUT /routes to {follower.id} failed: {e}") from e
            t_ack = mono()
            got = routes_version(d) if st == 200 else None
            if got is None:
                stop.set()
                raise BenchError(f"write {i}: PUT /routes to {follower.id} answered {st} {d}")
            if got != target:
                # Only this script writes, so this should not happen; follow the real version.
                warn(f"write {i}: expected version {target}, got {got}")
                target = got
            for t in threads:
                t.join(self.args.write_timeout + 2)
            stop.set()
            version = target
            ack.append((t_ack - t_send) * 1000)
            if any(s is None for s in seen):
                timeouts += 1
                missing = [c.nodes[k].id for k, s in enumerate(seen) if s is None]
                warn(f"write {i} (v{target}) not seen on {missing} within {self.args.write_timeout} s")
                continue
            lat.append((max(seen) - t_send) * 1000)
        for a in pollers + [writer]:
            a.close()
        return {"lat": lat, "ack": ack, "timeouts": timeouts, "follower": follower.id, "leader": leader}

    # -- 3. leader failover --------------------------------------------------------------------

    def measure_failover(self, c: Cluster, leader_id: str) -> dict:
        leader = c.by_id(leader_id)
        survivors = [n for n in c.nodes if n.id != leader_id]
        target = survivors[0]
        watch = Admin(target.admin_addr, 1.0)
        writer = Admin(target.admin_addr, self.args.put_timeout)
        st, d = watch.get("/cluster")
        before = (d.get("routing") or {}).get("version") if isinstance(d, dict) else None
        if st != 200 or not isinstance(before, int):
            raise BenchError(f"GET /cluster on {target.id}: {st} {d}")

        stop = threading.Event()
        seen = {"version": None, "leader": None, "new_leader": None}

        def watcher() -> None:
            end = mono() + self.args.failover_timeout
            while not stop.is_set() and mono() < end:
                st, d = watch.try_get("/cluster", 1.0)
                now = mono()
                if st == 200 and isinstance(d, dict):
                    ldr = cluster_leader(d)
                    if seen["leader"] is None and ldr is not None and ldr != leader_id:
                        seen["leader"], seen["new_leader"] = now, ldr
                    v = (d.get("routing") or {}).get("version")
                    if seen["version"] is None and isinstance(v, int) and v > before:
                        seen["version"] = now
                    if seen["leader"] is not None and seen["version"] is not None:
                        return
                time.sleep(0.005)

        th = threading.Thread(target=watcher, daemon=True)
        th.start()
        log(f"failover: {utc_now()} SIGKILL leader {leader_id} (pid {leader.proc.pid}); "
            f"PUT /routes to {target.id} in a loop, each bounded to {self.args.put_timeout} s")
        t_kill = mono()
        leader.killed = True
        leader.proc.send_signal(signal.SIGKILL)
        attempts, errors, t_ok = 0, [], None
        end = t_kill + self.args.failover_timeout
        i = 100000
        while mono() < end:
            attempts += 1
            i += 1
            left = end - mono()
            try:
                st, d = writer.request("PUT", "/routes", body=self.table_for(i),
                                       timeout=max(0.05, min(self.args.put_timeout, left)))
                if st == 200 and routes_version(d) is not None:
                    t_ok = mono()
                    break
                errors.append(f"{st} {(d or {}).get('error') if isinstance(d, dict) else d}")
            except (OSError, http.client.HTTPException) as e:
                errors.append(type(e).__name__ if not str(e) else f"{type(e).__name__}: {e}")
            time.sleep(0.02)
        # After a commit the watcher has (nearly) everything; give it a moment, not the whole budget.
        th.join(1.0 if t_ok is not None else max(0.0, end - mono()) + 1.0)
        stop.set()
        leader.proc.wait(timeout=5)
        watch.close()
        writer.close()
        commit_at = min([t for t in (t_ok, seen["version"]) if t is not None], default=None)
        return {
            "old_leader": leader_id,
            "via": target.id,
            "commit_s": None if commit_at is None else commit_at - t_kill,
            "ok_s": None if t_ok is None else t_ok - t_kill,
            "leader_s": None if seen["leader"] is None else seen["leader"] - t_kill,
            "new_leader": seen["new_leader"],
            "attempts": attempts,
            "errors": errors,
        }

    # -- 4. dead-node detection ----------------------------------------------------------------

    def measure_detection(self, c: Cluster, leader_id: str) -> dict:
        victim = next(n for n in reversed(c.nodes) if n.id != leader_id)
        survivors = [n for n in c.nodes if n is not victim]
        watchers = [Admin(n.admin_addr, 1.0) for n in survivors]
        seen: list[float | None] = [None] * len(survivors)
        stop = threading.Event()
        go = threading.Event()

        def watch(k: int, adm: Admin) -> None:
            go.wait(5)
            end = mono() + self.args.detect_timeout
            while not stop.is_set() and mono() < end:
                st, d = adm.try_get("/cluster", 1.0)
                if st == 200 and member_live(d, victim.id) is False:
                    seen[k] = mono()
                    return
                time.sleep(self.args.poll_ms / 1000)

        threads = [threading.Thread(target=watch, args=(k, a), daemon=True)
                   for k, a in enumerate(watchers)]
        for t in threads:
            t.start()
        log(f"detection: {utc_now()} SIGKILL follower {victim.id} (pid {victim.proc.pid}); polling GET /cluster "
            f"on {', '.join(n.id for n in survivors)}")
        victim.killed = True
        t_kill = mono()
        victim.proc.send_signal(signal.SIGKILL)
        go.set()
        for t in threads:
            t.join(self.args.detect_timeout + 2)
        stop.set()
        victim.proc.wait(timeout=5)
        for a in watchers:
            a.close()
        per = {n.id: (None if s is None else s - t_kill) for n, s in zip(survivors, seen)}
        firsts = [v for v in per.values() if v is not None]
        return {"victim": victim.id, "per_survivor": per, "first_s": min(firsts) if firsts else None}

    # -- whole run -----------------------------------------------------------------------------

    def run(self) -> None:
        res = self.res
        self.setup()

        c, t0 = self.launch("a")
        secs, leader = self.wait_formed(c, t0)
        log(f"cluster a formed in {secs:.3f} s, leader {leader}")
        res["formation"].append(secs)
        self.wait_settled(c, leader)
        res["writes"] = self.measure_writes(c, leader)
        self.wait_settled(c, leader)
        res["failover"] = self.measure_failover(c, leader)
        self.procs.stop([n.proc for n in c.nodes])

        c, t0 = self.launch("b")
        secs, leader = self.wait_formed(c, t0)
        log(f"cluster b formed in {secs:.3f} s, leader {leader}")
        res["formation"].append(secs)
        self.wait_settled(c, leader)
        res["detect"] = self.measure_detection(c, leader)
        self.procs.stop([n.proc for n in c.nodes])


# --------------------------------------------------------------------------------------------
# report


def pct(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    k = max(1, math.ceil(p / 100 * len(sorted_vals)))
    return sorted_vals[k - 1]


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"  # not measured (the run failed first): neither a pass nor a figure
    return "MISS" if value >= target else "PASS"


def fmt_s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f} s"


def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} ms"


def build_rows(res: dict, args: argparse.Namespace) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    rows, notes = [], []

    form = res.get("formation") or []
    worst = max(form) if form else None
    rows.append(("3-node cluster formation (launch -> all /readyz 200 + one leader)",
                 fmt_s(worst), f"< {TARGET_FORMATION_S:g} s", verdict(worst, TARGET_FORMATION_S)))
    if form:
        notes.append("formation samples: " + ", ".join(f"{s:.3f} s" for s in form) + " (worst shown)")

    w = res.get("writes")
    if w:
        lat = sorted(w["lat"])
        p50 = pct(lat, 50) if lat else None
        p99 = pct(lat, 99) if lat else None
        mx = lat[-1] if lat else None
        if w["timeouts"]:
            p99 = None  # a write never seen everywhere: the p99 cannot be claimed
        label = f"write to follower -> applied on all 3 ({len(w['lat'])}/{args.writes} writes)"
        rows.append((label + ", p50", fmt_ms(p50), "", ""))
        rows.append((label + ", p99", fmt_ms(p99), f"< {TARGET_WRITE_P99_MS:g} ms",
                     verdict(p99, TARGET_WRITE_P99_MS)))
        rows.append((label + ", max", fmt_ms(mx), "", ""))
        ack = sorted(w["ack"])
        if ack:
            notes.append(f"PUT to follower {w['follower']} answered 200 after p50 {pct(ack, 50):.1f} ms, "
                         f"p99 {pct(ack, 99):.1f} ms, max {ack[-1]:.1f} ms (leader {w['leader']})")
        if w["timeouts"]:
            notes.append(f"{w['timeouts']} write(s) not applied on every node within "
                         f"{args.write_timeout} s")
    else:
        rows.append(("write to follower -> applied on all 3, p99", "n/a",
                     f"< {TARGET_WRITE_P99_MS:g} ms", "n/a"))

    f = res.get("failover")
    v = f["commit_s"] if f else None
    rows.append(("leader SIGKILL -> next write commits (via a survivor)", fmt_s(v),
                 f"< {TARGET_FAILOVER_S:g} s", verdict(v, TARGET_FAILOVER_S)))
    if f:
        notes.append(
            f"failover: killed leader {f['old_leader']}, wrote via {f['via']}; first 200 after "
            f"{fmt_s(f['ok_s'])} ({f['attempts']} PUT attempt(s)); {f['via']} saw new leader "
            f"{f['new_leader'] or '?'} after {fmt_s(f['leader_s'])}")
        if f["errors"]:
            shown = "; ".join(f["errors"][:4]) + (" ..." if len(f["errors"]) > 4 else "")
            notes.append(f"failover: failed attempts before the commit: {shown}")

    d = res.get("detect")
    v = d["first_s"] if d else None
    rows.append(("follower SIGKILL -> survivor's /cluster shows live: false", fmt_s(v),
                 f"< {TARGET_DETECT_S:g} s", verdict(v, TARGET_DETECT_S)))
    if d:
        notes.append(f"detection: killed follower {d['victim']} (cluster b); seen dead by " + ", ".join(
            f"{k} after {fmt_s(s)}" for k, s in d["per_survivor"].items()))
    return rows, notes


def print_table(rows: list, notes: list[str], markdown: bool, setup: str) -> int:
    """Print measure/value/target/result rows (plain, then markdown with a "Measured" line naming
    the machine and `setup`) and return how many missed their target. Shared by the benchmarks."""
    w0 = max(len(r[0]) for r in rows)
    w1 = max(10, max(len(r[1]) for r in rows))
    print()
    print(f"{'measure':<{w0}}  {'value':>{w1}}  {'target':>9}  result")
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]:>9}  {r[3]}")
    print()
    for n in notes:
        print(f"- {n}")
    if markdown:
        cpu = "unknown CPU"
        for line in read_lines("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        print()
        print(f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on {cpu} ({os.cpu_count()} cores{setup}.")
        print()
        print("| measure | value | target | result |")
        print("|---|---:|---:|---|")
        for r in rows:
            print(f"| {r[0].replace('|', '/')} | {r[1]} | {r[2] or '—'} | {r[3] or '—'} |")
        print()
        for n in notes:
            print(f"- {n}")
    return sum(1 for r in rows if r[3] == "MISS")


def build_kind(args: argparse.Namespace) -> str:
    return "debug" if "/debug/" in os.path.realpath(args.bin) else "release"


def busy_note(busy: int | None) -> str:
    return "" if busy is None else f", {busy}% busy before the run"


def print_report(res: dict, args: argparse.Namespace, busy: int | None, total_s: float) -> int:
    rows, notes = build_rows(res, args)
    setup = (f"{busy_note(busy)}); {build_kind(args)} build; 3 nodes (us, us, eu) on loopback, default "
             f"gossip and Raft timings; {args.writes} writes; run took {total_s:.0f} s")
    return print_table(rows, notes, args.markdown, setup)


def cpu_busy(seconds: float = 0.5) -> int | None:
    def snap() -> tuple[int, int] | None:
        for line in read_lines("/proc/stat"):
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                return sum(v[:8]) - idle, idle
        return None
    a = snap()
    time.sleep(seconds)
    b = snap()
    if not a or not b or (b[0] - a[0]) + (b[1] - a[1]) == 0:
        return None
    return round(100 * (b[0] - a[0]) / ((b[0] - a[0]) + (b[1] - a[1])))


# --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", required=True, help="meridian binary")
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    p.add_argument("--writes", type=int, default=100, help="writes for the propagation figure")
    p.add_argument("--write-poll-ms", type=float, default=2.0, help="GET /routes poll interval per node")
    p.add_argument("--poll-ms", type=float, default=10.0, help="poll interval for formation/detection")
    p.add_argument("--write-timeout", type=float, default=5.0, help="bound per write (PUT and propagation)")
    p.add_argument("--put-timeout", type=float, default=2.0, help="bound per PUT during failover")
    p.add_argument("--formation-timeout", type=float, default=30.0)
    p.add_argument("--failover-timeout", type=float, default=15.0)
    p.add_argument("--detect-timeout", type=float, default=10.0)
    p.add_argument("--max-seconds", type=int, default=150, help="hard limit for the whole run")
    p.add_argument("--log-level", default="info", help="node --log-level")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir (logs) after a successful run")
    p.add_argument("--fail-on-miss", action="store_true", help="exit 3 if any figure misses its target")
    a = p.parse_args()
    if a.writes < 1:
        p.error("--writes must be >= 1")
    return a


def run_bench(args, make_bench, report, reportable) -> int:
    """Run one benchmark under a time limit with cleanup on any exit; shared by the bench scripts.

    `make_bench(args)` builds the benchmark (it has `.run()`, `.res`, `.failed`, `.tmp`, `.bin`,
    `.procs`); `report(res, args, busy, total)` prints it and returns the misses; `reportable(bench)`
    says whether a failed run still measured enough to print.
    """

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def on_alarm(_signum, _frame):
        raise OutOfTime()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.max_seconds)

    busy = cpu_busy()
    if busy is not None and busy > 30:
        warn(f"the machine is already {busy}% busy before the run (other work); expect noisy figures")

    bench = make_bench(args)
    log(f"binary {bench.bin}; scratch dir {bench.tmp}")
    started = mono()
    rc = 0
    try:
        bench.run()
    except BenchError as e:
        log(f"ERROR: {e}")
        bench.failed = True
        rc = 1
    except OutOfTime:
        log(f"ERROR: run exceeded --max-seconds {args.max_seconds}")
        bench.failed = True
        rc = 1
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    finally:
        signal.alarm(0)
        bench.procs.stop_all()
    total = mono() - started
    if rc != 130 and (rc == 0 or reportable(bench)):
        misses = report(bench.res, args, busy, total)
        if rc == 0 and misses and args.fail_on_miss:
            rc = 3
    if bench.failed or args.keep:
        log(f"logs kept in {bench.tmp}")
    else:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    log(f"done in {total:.1f} s")
    return rc


def main() -> int:
    args = parse_args()
    if not (os.path.isfile(args.bin) and os.access(args.bin, os.X_OK)):
        log(f"ERROR: {args.bin} is not an executable file")
        return 1
    return run_bench(args, Bench, print_report, lambda b: bool(b.res["formation"]))


if __name__ == "__main__":
    sys.exit(main())
