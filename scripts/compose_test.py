#!/usr/bin/env python3
"""Fault scenarios for the Meridian compose cluster (docker-compose.yml), on the real containers.

Run it through scripts/compose.sh (`test`, and `up` uses `ready` and `status`), which builds the
image, creates .compose/ and starts the cluster first. From the repository root:

  python3 scripts/compose_test.py ready [--timeout S]   wait until every node's /readyz is 200
  python3 scripts/compose_test.py status                the node table
  python3 scripts/compose_test.py run [--scenarios a,b,c,d,e] [--max-seconds S]

Scenarios of `run`, each bounded in time, each printing PASS/FAIL and its figures:
  a. upstream stopped: `docker stop` up-us under paced GETs to us-1 (127.0.0.1:8080); answers keep
     coming from eu/ap (x-meridian-region), failed GETs after the first forwarded answer (target 0);
     `docker start` it and time until x-meridian-region: us is back.
  b. node cut off: `docker network disconnect` a non-leader node (eu-2 unless it leads) from both
     its networks; time until the others' /cluster show it not live; a PUT /routes on us-1 still
     commits; reconnect it (same aliases) and time until its own routing version catches up.
  c. leader killed: `docker kill` the Raft leader; time until the others agree on a new leader and
     until a PUT /routes commits; `docker start` it and time until it is ready, live and at the
     cluster's routing version.
  d. rolling restart under load: paced GETs (50/s) spread over the nodes' data planes, skipping
     the node being restarted; `docker restart -t 10` each node in turn (the leader last), waiting
     until it is ready and live again; failed GETs (target 0).
  e. route change: PUT /routes on one node; time until every node's GET /routes has the version.

Nodes are reached from the host at their addresses on the inter-region network (a Linux host
reaches bridge-network containers), admin port 9901 with the bearer token in
.compose/config/admin-token, data port 8080. Containers are found with `COMPOSE ps -q SERVICE`,
where COMPOSE is $MERIDIAN_COMPOSE (set by compose.sh) or whichever of `docker compose` and
`docker-compose` exists. Every scenario puts back what it changed (upstream started, network
reconnected, container started) even when it fails or is interrupted. The routing-table changes
are harmless: one route named `compose-test` under /_compose_test/, replaced each time.

Exit status: 0 all passed (or `ready`/`status` succeeded), 1 error (cluster not ready, docker
failed), 3 a scenario failed, 130 interrupted. Progress goes to stderr, results to stdout.
Python 3.9+ standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

mono = time.monotonic

NODES = ("us-1", "us-2", "eu-1", "eu-2", "ap-1", "ap-2")
UPSTREAMS = ("up-us", "up-eu", "up-ap")
INTER = "inter-region"
ADMIN_PORT = 9901
DATA_PORT = 8080
PUBLISHED = ("127.0.0.1", 8080)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN_FILE = os.path.join(ROOT, ".compose", "config", "admin-token")
TEST_ROUTE = "compose-test"

T0 = mono()


def region_of(node: str) -> str:
    return node.split("-")[0]


def log(msg: str) -> None:
    print(f"[compose-test {mono() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class TestError(Exception):
    """The cluster or docker did not do what a step needs; the scenario fails with this message."""


class Deadline(Exception):
    """The whole run went past --max-seconds."""


# ---------------------------------------------------------------------------------------------
# docker


def compose_cmd() -> list[str]:
    env = os.environ.get("MERIDIAN_COMPOSE", "").split()
    if env:
        return env
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise TestError("neither `docker compose` nor docker-compose is installed")


def sh(args: list[str], timeout: float = 60, check: bool = True) -> str:
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise TestError(f"`{' '.join(args)}` did not finish within {timeout:.0f} s") from None
    if check and p.returncode != 0:
        raise TestError(f"`{' '.join(args)}` failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return p.stdout


class Docker:
    """Containers of the compose project, by service name, and their inter-region addresses."""

    def __init__(self) -> None:
        self.compose = compose_cmd()
        self.ids: dict[str, str] = {}
        self.ips: dict[str, Optional[str]] = {}

    def cid(self, service: str) -> str:
        if service not in self.ids:
            # One compose call for all services (docker-compose v1 takes ~1 s to start).
            ids = sh(self.compose + ["ps", "-a", "-q"], timeout=30, check=False).split()
            if ids:
                for c in json.loads(sh(["docker", "inspect", *ids], timeout=30)):
                    labels = c["Config"].get("Labels") or {}
                    name = labels.get("com.docker.compose.service")
                    if name and labels.get("com.docker.compose.oneoff", "False") != "True":
                        self.ids[name] = c["Id"]
        if service not in self.ids:
            raise TestError(f"no container for service {service}; is the cluster up? (scripts/compose.sh up)")
        return self.ids[service]

    def inspect(self, service: str) -> dict:
        return json.loads(sh(["docker", "inspect", self.cid(service)], timeout=30))[0]

    def running(self, service: str) -> bool:
        return bool(self.inspect(service)["State"]["Running"])

    def networks(self, service: str) -> dict[str, dict]:
        return self.inspect(service)["NetworkSettings"]["Networks"] or {}

    def refresh_ip(self, service: str) -> Optional[str]:
        ip = None
        for name, net in self.networks(service).items():
            if (name == INTER or name.endswith("_" + INTER)) and net.get("IPAddress"):
                ip = net["IPAddress"]
        self.ips[service] = ip
        return ip

    def ip(self, service: str) -> Optional[str]:
        if service not in self.ips:
            self.refresh_ip(service)
        return self.ips[service]

    def docker(self, *args: str, timeout: float = 60) -> None:
        sh(["docker", *args], timeout=timeout)

    def logs_tail(self, service: str, lines: int = 15) -> str:
        try:
            p = subprocess.run(
                ["docker", "logs", "--tail", str(lines), self.cid(service)],
                capture_output=True, text=True, timeout=20,
            )
            return (p.stdout + p.stderr).strip()
        except (subprocess.TimeoutExpired, TestError) as e:
            return f"(no logs: {e})"


# ---------------------------------------------------------------------------------------------
# HTTP


def request(host: str, port: int, method: str, path: str, body: Optional[bytes] = None,
            headers: Optional[dict] = None, timeout: float = 2.0) -> tuple[int, dict, bytes]:
    """One request on its own connection; raises OSError (and http.client errors) on failure."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        hdrs = {"connection": "close"}
        hdrs.update(headers or {})
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


class Admin:
    def __init__(self, docker: Docker) -> None:
        self.docker = docker
        try:
            with open(TOKEN_FILE, encoding="utf-8") as f:
                self.token = f.read().strip()
        except OSError as e:
            raise TestError(f"cannot read the admin token ({e}); run scripts/compose.sh up") from None

    def call(self, node: str, method: str, path: str, body: Optional[dict] = None,
             headers: Optional[dict] = None, timeout: float = 2.0) -> tuple[int, dict]:
        ip = self.docker.ip(node)
        if not ip:
            raise OSError(f"{node} has no inter-region address")
        hdrs = {"authorization": f"Bearer {self.token}"}
        if body is not None:
            hdrs["content-type"] = "application/json"
        hdrs.update(headers or {})
        raw = json.dumps(body).encode() if body is not None else None
        status, _, data = request(ip, ADMIN_PORT, method, path, raw, hdrs, timeout)
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {"raw": data[:200].decode(errors="replace")}
        return status, doc

    def get(self, node: str, path: str, timeout: float = 2.0) -> dict:
        status, doc = self.call(node, "GET", path, timeout=timeout)
        if status != 200:
            raise OSError(f"GET {path} on {node}: {status} {doc}")
        return doc

    def try_get(self, node: str, path: str, timeout: float = 1.0) -> Optional[dict]:
        try:
            return self.get(node, path, timeout)
        except (OSError, http.client.HTTPException):
            return None

    def ready(self, node: str) -> bool:
        try:
            status, _ = self.call(node, "GET", "/readyz", timeout=1.0)
            return status == 200
        except (OSError, http.client.HTTPException):
            return False


def wait_until(what: str, pred: Callable[[], object], timeout: float, interval: float = 0.05):
    """Polls pred until it returns something true; returns (value, seconds). Raises on timeout."""
    start = mono()
    while True:
        value = pred()
        if value:
            return value, mono() - start
        if mono() - start > timeout:
            raise TestError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# paced load


@dataclass
class Sample:
    sent: float
    done: float
    target: str
    status: int  # 0 = no answer
    region: str
    error: str


class Load:
    """Paced GETs from a few threads (a slow answer does not delay the next send).

    pick() returns (label, host, port) for each request, or None to skip that slot."""

    def __init__(self, pick: Callable[[], Optional[tuple[str, str, int]]], rate: float,
                 path: str = "/compose-test", threads: int = 6, timeout: float = 10.0) -> None:
        self.pick, self.rate, self.path, self.timeout = pick, rate, path, timeout
        self.samples: list[Sample] = []
        self.lock = threading.Lock()
        self.slot = 0
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(threads)]
        self.start_at = 0.0

    def start(self) -> "Load":
        self.start_at = mono()
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> list[Sample]:
        self.stopping.set()
        for t in self.threads:
            t.join(self.timeout + 2)
        with self.lock:
            return sorted(self.samples, key=lambda s: s.sent)

    def snapshot(self) -> list[Sample]:
        with self.lock:
            return list(self.samples)

    def worker(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                at = self.start_at + self.slot / self.rate
                self.slot += 1
            delay = at - mono()
            if delay > 0 and self.stopping.wait(delay):
                return
            target = self.pick()
            if target is None:
                continue
            label, host, port = target
            sent = mono()
            try:
                status, headers, _ = request(host, port, "GET", self.path, timeout=self.timeout)
                s = Sample(sent, mono(), label, status, headers.get("x-meridian-region", ""), "")
            except (OSError, http.client.HTTPException) as e:
                s = Sample(sent, mono(), label, 0, "", f"{type(e).__name__}: {e}")
            with self.lock:
                self.samples.append(s)


def failures(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.status != 200]


def describe_failures(samples: list[Sample], limit: int = 5) -> str:
    bad = failures(samples)
    out = [f"{s.target} +{s.sent - T0:.2f}s {s.status or s.error}" for s in bad[:limit]]
    return "; ".join(out) + (f"; ... {len(bad) - limit} more" if len(bad) > limit else "")


# ---------------------------------------------------------------------------------------------
# cluster helpers


class Cluster:
    def __init__(self) -> None:
        self.docker = Docker()
        self.admin = Admin(self.docker)
        self.tag = 0

    def leader(self, asked: tuple[str, ...] = NODES) -> Optional[str]:
        for node in asked:
            doc = self.admin.try_get(node, "/cluster")
            if doc and doc.get("raft", {}).get("leader"):
                return doc["raft"]["leader"]
        return None

    def term(self) -> Optional[int]:
        """The highest Raft term any node reports."""
        terms = [doc["raft"]["term"] for doc in (self.admin.try_get(n, "/cluster") for n in NODES) if doc]
        return max(terms) if terms else None

    def routes(self, node: str) -> dict:
        return self.admin.get(node, "/routes")

    def changed_table(self, table: dict, why: str) -> dict:
        """The table with one harmless route (replacing the previous test route)."""
        self.tag += 1
        tag = f"{why}-{int(time.time() * 1000)}-{self.tag}"
        table = json.loads(json.dumps(table))
        service = next(iter(table.get("services", {})), None)
        if service is None:
            raise TestError("the routing table has no service")
        routes = [r for r in table.get("routes", []) if r.get("name") != TEST_ROUTE]
        routes.insert(0, {"name": TEST_ROUTE, "path_prefix": f"/_compose_test/{tag}", "service": service})
        table["routes"] = routes
        return table

    def put_routes(self, node: str, why: str, timeout: float) -> tuple[int, float, int]:
        """PUT a changed table on node with If-Match, retrying on 503/409/no answer until it
        commits; returns (new version, seconds, attempts)."""
        start = mono()
        attempts = 0
        last = ""
        while mono() - start < timeout:
            attempts += 1
            try:
                cur = self.routes(node)
                status, doc = self.admin.call(
                    node, "PUT", "/routes", self.changed_table(cur["table"], why),
                    {"if-match": str(cur["version"])}, timeout=7.0,
                )
                if status == 200 and isinstance(doc.get("version"), int):
                    return doc["version"], mono() - start, attempts
                last = f"{status} {doc}"
                if status == 400:
                    raise TestError(f"PUT /routes on {node} refused: {last}")
            except (OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.1)
        raise TestError(f"PUT /routes on {node} did not commit within {timeout:.0f} s (last: {last})")

    def member(self, observer: str, node: str) -> Optional[dict]:
        doc = self.admin.try_get(observer, "/cluster")
        if not doc:
            return None
        return next((m for m in doc.get("members", []) if m.get("id") == node), None)

    def version_of(self, node: str) -> Optional[int]:
        doc = self.admin.try_get(node, "/cluster")
        return doc["routing"]["version"] if doc else None

    def rejoined(self, node: str, observers: tuple[str, ...], version: int) -> bool:
        """node is ready, at `version` or later, and every observer sees it live."""
        if not self.admin.ready(node):
            return False
        v = self.version_of(node)
        if v is None or v < version:
            return False
        for o in observers:
            m = self.member(o, node)
            if not m or not m.get("live"):
                return False
        return True

    def wait_ready(self, timeout: float, quiet: bool = False) -> float:
        start = mono()
        last_report = 0.0
        pending: list[str] = list(NODES)
        while True:
            for node in list(pending):
                if node in self.docker.ips and self.docker.ips[node] is None:
                    self.docker.ips.pop(node)
                if not self.docker.ip(node):
                    continue
                if self.admin.ready(node):
                    pending.remove(node)
            if not pending:
                return mono() - start
            for svc in pending + list(UPSTREAMS):
                state = self.docker.inspect(svc)["State"]
                if not state["Running"] and not state.get("Restarting"):
                    why = f"{state.get('Status')}, exit {state.get('ExitCode')}"
                    raise TestError(f"{svc} is not running ({why}):\n{self.docker.logs_tail(svc)}")
            if mono() - start > timeout:
                detail = "\n".join(f"--- {n}:\n{self.docker.logs_tail(n)}" for n in pending)
                raise TestError(f"not ready after {timeout:.0f} s: {', '.join(pending)}\n{detail}")
            if not quiet and mono() - last_report > 5:
                last_report = mono()
                log(f"waiting for /readyz on {', '.join(pending)}")
            # Addresses change when a container restarts.
            for node in pending:
                self.docker.ips.pop(node, None)
            time.sleep(0.25)


# ---------------------------------------------------------------------------------------------
# scenarios


@dataclass
class Result:
    key: str
    title: str
    ok: bool = False
    figures: list[tuple[str, str, str]] = field(default_factory=list)  # (figure, value, target)
    summary: list[str] = field(default_factory=list)  # short "label value" for the final table
    error: str = ""

    def fig(self, name: str, value: object, target: str = "", short: str = "") -> None:
        """Record a figure; `short` also puts it in the summary table under that label."""
        if isinstance(value, float):
            value = f"{value:.2f} s"
        self.figures.append((name, str(value), target))
        if short:
            self.summary.append(f"{short} {value}" + (f" (target {target})" if target else ""))
        log(f"  {name}: {value}" + (f"  (target {target})" if target else ""))


def scenario_a(c: Cluster, r: Result) -> None:
    up = "up-us"
    d = c.docker

    def region_now() -> str:
        try:
            status, headers, _ = request(*PUBLISHED, "GET", "/compose-test", timeout=5)
            return headers.get("x-meridian-region", "") if status == 200 else ""
        except (OSError, http.client.HTTPException):
            return ""

    wait_until("us-1 answering from region us (127.0.0.1:8080)", lambda: region_now() == "us", 30)
    load = Load(lambda: ("us-1", *PUBLISHED), rate=40).start()
    stopped = False
    try:
        time.sleep(1.0)
        log(f"docker stop {up}")
        t_stop = mono()
        d.docker("stop", "-t", "5", d.cid(up))
        stopped = True
        r.fig("docker stop took", mono() - t_stop)

        def forwarded():
            return next((s for s in load.snapshot() if s.sent >= t_stop and s.status == 200
                         and s.region in ("eu", "ap")), None)

        first, _ = wait_until("an answer from eu or ap", forwarded, 20)
        t_detect = first.sent
        r.fig("first answer from eu/ap after `docker stop` began", t_detect - t_stop)
        time.sleep(5.0)
        t_end = mono()
        window = [s for s in load.snapshot() if t_detect <= s.sent < t_end]
        before = [s for s in load.snapshot() if t_stop <= s.sent < t_detect]
        regions = sorted({s.region for s in window if s.status == 200})
        r.fig("GETs in the 5 s after it", len(window))
        r.fig("  answered from regions", ",".join(regions) or "-")
        r.fig("  failed", len(failures(window)), "0", short="failed GETs")
        r.fig("failed GETs between stop and first forward", len(failures(before)))
        if failures(window):
            r.error = "failed: " + describe_failures(window)
        elif not regions or set(regions) - {"eu", "ap"}:
            r.error = f"answered from {regions} while up-us was stopped"

        log(f"docker start {up}")
        t_start = mono()
        d.docker("start", d.cid(up))
        stopped = False

        def back():
            return next((s for s in load.snapshot() if s.sent >= t_start and s.status == 200
                         and s.region == "us"), None)

        first_us, _ = wait_until("x-meridian-region: us again", back, 30)
        r.fig("us answers again after start", first_us.sent - t_start, short="us back after")
    finally:
        samples = load.stop()
        if stopped:
            d.docker("start", d.cid(up))
    r.fig("failed GETs in the whole scenario", f"{len(failures(samples))} of {len(samples)}")
    r.ok = not failures(window) and not r.error


def scenario_b(c: Cluster, r: Result) -> None:
    d = c.docker
    leader = c.leader()
    victim = next(n for n in ("eu-2", "ap-2", "us-2", "eu-1", "ap-1") if n != leader)
    observers = tuple(n for n in NODES if n != victim)
    writer = "us-1" if victim != "us-1" else "us-2"
    r.fig("node cut off (leader is {})".format(leader), victim)
    cid = d.cid(victim)
    nets = {name: [a for a in (net.get("Aliases") or []) if not cid.startswith(a)]
            for name, net in d.networks(victim).items()}
    ip_before = d.ip(victim)
    term0 = c.term()
    disconnected: list[str] = []
    try:
        t_cut = mono()
        for name in nets:
            d.docker("network", "disconnect", name, cid)
            disconnected.append(name)
        log(f"{victim} disconnected from {', '.join(nets)}")

        def all_see_dead():
            for o in observers:
                m = c.member(o, victim)
                if m is None or m.get("live"):
                    return False
            return True

        wait_until(f"every other node to see {victim} not live", all_see_dead, 30, 0.1)
        r.fig("others mark it not live after", mono() - t_cut, short="not live after")
        version, took, attempts = c.put_routes(writer, "b", 15)
        r.fig(f"PUT /routes on {writer} committed",
              f"version {version} in {took:.2f} s ({attempts} attempt(s))")

        t_join = mono()
        for name in list(disconnected):
            args = ["network", "connect"]
            for a in nets[name]:
                args += ["--alias", a]
            d.docker(*args, name, cid)
            disconnected.remove(name)
        log(f"{victim} reconnected")
        ip_after = d.refresh_ip(victim)
        if ip_after != ip_before:
            r.fig("inter-region address", f"{ip_before} -> {ip_after}")

        def caught_up():
            v = c.version_of(victim)
            return v is not None and v >= version

        _, took = wait_until(f"{victim} at routing version {version}", caught_up, 60, 0.05)
        r.fig(f"its routing version reaches {version} after", took, short="caught up after")
        wait_until(f"{victim} live for every other node",
                   lambda: all((c.member(o, victim) or {}).get("live") for o in observers), 60, 0.1)
        r.fig("live again for every other node after", mono() - t_join)
        r.fig("Raft term before -> after (each step is an election)", f"{term0} -> {c.term()}")
        r.ok = True
    finally:
        for name in disconnected:
            args = ["network", "connect"]
            for a in nets[name]:
                args += ["--alias", a]
            sh(["docker", *args, name, cid], check=False)
        d.refresh_ip(victim)


def scenario_c(c: Cluster, r: Result) -> None:
    d = c.docker
    old = c.leader()
    if not old:
        raise TestError("no node reports a leader")
    others = tuple(n for n in NODES if n != old)
    version0 = c.version_of(others[0]) or 0
    r.fig("leader killed", old)
    killed = False
    try:
        t_kill = mono()
        d.docker("kill", d.cid(old))
        killed = True

        def agreed():
            seen = set()
            for n in others:
                doc = c.admin.try_get(n, "/cluster", timeout=0.5)
                if not doc:
                    return None
                seen.add(doc["raft"].get("leader"))
            return seen.pop() if len(seen) == 1 and None not in seen and old not in seen else None

        new, _ = wait_until("the others to agree on a new leader", agreed, 30, 0.05)
        r.fig(f"others agree on a new leader ({new}) after", mono() - t_kill, short="new leader after")
        writer = next(n for n in others if n != new)
        version, _, _ = c.put_routes(writer, "c", 20)
        r.fig(f"a PUT /routes on {writer} commits (version {version}) after", mono() - t_kill,
              short="write after")
        if version <= version0:
            raise TestError(f"version did not move ({version0} -> {version})")

        t_start = mono()
        d.docker("start", d.cid(old))
        killed = False
        d.refresh_ip(old)
        wait_until(f"{old} ready, live and at version {version}",
                          lambda: c.rejoined(old, others, version), 60, 0.1)
        r.fig(f"{old} back (ready, live, version {version}) after start", mono() - t_start,
              short="rejoined after")
        r.ok = True
    finally:
        if killed:
            sh(["docker", "start", d.cid(old)], check=False)
        d.refresh_ip(old)


def scenario_d(c: Cluster, r: Result) -> None:
    d = c.docker
    leader = c.leader()
    order = [n for n in NODES if n != leader] + ([leader] if leader else [])
    in_rotation = set(NODES)
    rr = {"i": 0}
    lock = threading.Lock()

    def pick():
        with lock:
            live = [n for n in NODES if n in in_rotation and d.ips.get(n)]
            if not live:
                return None
            rr["i"] += 1
            n = live[rr["i"] % len(live)]
            return n, d.ips[n], DATA_PORT

    for n in NODES:
        d.refresh_ip(n)
    rate = 50.0
    term0 = c.term()
    load = Load(pick, rate=rate).start()
    times: list[str] = []
    slow: list[Sample] = []
    try:
        for node in order:
            versions = (c.version_of(n) for n in NODES if n != node)
            version = max((v for v in versions if v is not None), default=0)
            # Two slow GETs (the upstream holds them 1.5 s) in flight when SIGTERM arrives: the
            # node must finish them while it drains.
            ip = d.ips[node]
            slow_threads = [threading.Thread(target=slow_get, args=(node, ip, slow), daemon=True)
                            for _ in range(2)]
            for t in slow_threads:
                t.start()
            with lock:
                in_rotation.discard(node)
            time.sleep(0.3)  # the paced requests already sent to it finish; the slow ones do not
            t0 = mono()
            d.docker("restart", "-t", "10", d.cid(node), timeout=40)
            for t in slow_threads:
                t.join(12)
            t_restarted = mono() - t0
            d.refresh_ip(node)  # pick() skips it until it is back in rotation
            others = tuple(n for n in NODES if n != node)
            wait_until(f"{node} ready, live and at version {version}",
                       lambda: c.rejoined(node, others, version), 60, 0.1)
            total = mono() - t0
            times.append(f"{node} {t_restarted:.1f}+{total - t_restarted:.1f}")
            log(f"{node} restarted in {t_restarted:.1f} s, back after {total:.1f} s")
            with lock:
                in_rotation.add(node)
            time.sleep(0.5)
    finally:
        samples = load.stop()
    r.fig("restart + rejoin per node (s)", ", ".join(times))
    r.fig("GETs sent (50/s, skipping the node restarting)", len(samples))
    bad = failures(samples)
    r.fig("Raft term before -> after (each step is an election)", f"{term0} -> {c.term()}")
    r.fig("failed GETs", len(bad), "0", short="failed GETs")
    slow_ok = sum(1 for s in slow if s.status == 200)
    r.fig("slow GETs in flight at SIGTERM answered 200", f"{slow_ok} of {len(slow)}", f"{2 * len(NODES)}",
          short="drained")
    if bad:
        r.error = "failed: " + describe_failures(samples)
    elif slow_ok != 2 * len(NODES):
        r.error = "slow GETs cut by the restart: " + describe_failures(slow)
    r.ok = len(times) == len(NODES) and not bad and slow_ok == 2 * len(NODES)


def slow_get(node: str, ip: str, out: list[Sample]) -> None:
    sent = mono()
    try:
        status, headers, _ = request(ip, DATA_PORT, "GET", "/compose-test/slow?delay_ms=1500", timeout=10)
        s = Sample(sent, mono(), node, status, headers.get("x-meridian-region", ""), "")
    except (OSError, http.client.HTTPException) as e:
        s = Sample(sent, mono(), node, 0, "", f"{type(e).__name__}: {e}")
    out.append(s)


def scenario_e(c: Cluster, r: Result) -> None:
    writer = "ap-2"
    done: dict[str, float] = {}
    go = threading.Event()
    state = {"version": None, "t0": 0.0}
    stop = threading.Event()

    def poll(node: str) -> None:
        go.wait()
        while not stop.is_set():
            try:
                v = c.admin.get(node, "/routes", timeout=1.0).get("version")
            except (OSError, http.client.HTTPException):
                v = None
            target = state["version"]
            if v is not None and target is not None and v >= target:
                done[node] = mono() - state["t0"]
                return
            time.sleep(0.005)

    threads = [threading.Thread(target=poll, args=(n,), daemon=True) for n in NODES]
    for t in threads:
        t.start()
    try:
        cur = c.routes(writer)
        # If-Match makes the new version known in advance, so the pollers run during the PUT.
        state["version"] = cur["version"] + 1
        state["t0"] = mono()
        go.set()
        status, doc = c.admin.call(writer, "PUT", "/routes", c.changed_table(cur["table"], "e"),
                                   {"if-match": str(cur["version"])}, timeout=7.0)
        acked = mono() - state["t0"]
        if status != 200 or doc.get("version") != state["version"]:
            raise TestError(f"PUT /routes on {writer} (If-Match {cur['version']}): {status} {doc}")
        r.fig(f"PUT /routes on {writer} answered (version {doc['version']})", acked)
        wait_until("every node at the new version", lambda: len(done) == len(NODES), 15, 0.01)
        slowest = max(done, key=done.get)
        r.fig("every node has it after", done[slowest], short="all nodes after")
        r.fig("per node (ms)", ", ".join(f"{n} {done[n] * 1000:.0f}" for n in NODES))
        r.ok = True
    finally:
        go.set()
        stop.set()
        for t in threads:
            t.join(2)


SCENARIOS = {
    "a": ("upstream stopped: us-1 fails over, then returns", scenario_a),
    "b": ("node cut off the network, writes go on, it catches up", scenario_b),
    "c": ("leader container killed: new leader, write, rejoin", scenario_c),
    "d": ("rolling restart of every node under load", scenario_d),
    "e": ("route change seen by every node", scenario_e),
}


# ---------------------------------------------------------------------------------------------
# commands


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, ["-" * w for w in widths]] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    sys.stdout.flush()


def cmd_status(c: Cluster) -> int:
    rows = []
    for node in NODES:
        try:
            state = c.docker.inspect(node)["State"]["Status"]
        except TestError:
            rows.append([node, region_of(node), "absent", "-", "-", "-", "-", "-", "-"])
            continue
        ip = c.docker.refresh_ip(node) or "-"
        doc = c.admin.try_get(node, "/cluster") if ip != "-" else None
        ready = "yes" if ip != "-" and c.admin.ready(node) else "no"
        if doc:
            live = sum(1 for m in doc.get("members", []) if m.get("live"))
            rows.append([node, doc["node"]["region"], state, ip, doc["raft"]["role"],
                         doc["raft"].get("leader") or "-", str(doc["routing"]["version"]),
                         f"{live}/{len(doc.get('members', []))}", ready])
        else:
            rows.append([node, region_of(node), state, ip, "?", "?", "?", "?", ready])
    print_table(rows, ["node", "region", "container", "address", "raft role", "leader",
                       "routing version", "live members", "ready"])
    return 0


def cmd_ready(c: Cluster, timeout: float) -> int:
    took = c.wait_ready(timeout)
    log(f"every node is ready ({took:.1f} s)")
    return 0


def cmd_run(c: Cluster, keys: list[str], max_seconds: float) -> int:
    def on_alarm(_sig, _frame):
        raise Deadline(f"the run went past --max-seconds {max_seconds:.0f}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(max_seconds))
    results: list[Result] = []
    started = mono()
    try:
        c.wait_ready(60)
        for key in keys:
            title, fn = SCENARIOS[key]
            r = Result(key, title)
            results.append(r)
            log(f"--- {key}. {title}")
            t = mono()
            try:
                fn(c, r)
            except TestError as e:
                r.ok, r.error = False, str(e)
            r.fig("scenario took", mono() - t)
            log(f"{'PASS' if r.ok else 'FAIL'} {key}. {title}" + (f": {r.error}" if r.error else ""))
            print(f"{'PASS' if r.ok else 'FAIL'}  {key}. {title}")
            for name, value, target in r.figures:
                print(f"      {name}: {value}" + (f"  (target {target})" if target else ""))
            if r.error:
                print(f"      error: {r.error}")
            sys.stdout.flush()
            # The next scenario starts from a whole, ready cluster.
            if key != keys[-1]:
                c.wait_ready(60, quiet=True)
    except Deadline as e:
        if results and not results[-1].ok and not results[-1].error:
            results[-1].error = str(e)
        log(str(e))
        results.append(Result("-", str(e)))
    finally:
        signal.alarm(0)

    print()
    rows = []
    for r in results:
        rows.append([r.key, "PASS" if r.ok else "FAIL", r.title, "; ".join(r.summary) or r.error[:60]])
    print_table(rows, ["", "result", "scenario", "key figures"])
    ok = all(r.ok for r in results) and len(results) == len(keys)
    print(f"\n{sum(r.ok for r in results)} of {len(keys)} scenarios passed in {mono() - started:.0f} s")
    return 0 if ok else 3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ready", help="wait until every node's /readyz is 200")
    p.add_argument("--timeout", type=float, default=120)
    sub.add_parser("status", help="print the node table")
    p = sub.add_parser("run", help="run the fault scenarios")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="e.g. a,c (default: all)")
    p.add_argument("--max-seconds", type=float, default=300)
    args = ap.parse_args()

    def on_term(_sig, _frame):
        raise KeyboardInterrupt

    # SIGTERM like Ctrl-C: every scenario puts back what it changed on the way out.
    signal.signal(signal.SIGTERM, on_term)
    try:
        c = Cluster()
        if args.cmd == "ready":
            return cmd_ready(c, args.timeout)
        if args.cmd == "status":
            return cmd_status(c)
        keys = [k.strip() for k in args.scenarios.split(",") if k.strip()]
        unknown = [k for k in keys if k not in SCENARIOS]
        if unknown or not keys:
            ap.error(f"unknown scenario(s) {unknown}; choose from {','.join(SCENARIOS)}")
        return cmd_run(c, keys, args.max_seconds)
    except TestError as e:
        log(f"ERROR: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
