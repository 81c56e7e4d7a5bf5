#!/usr/bin/env python3
"""dashboard_check.py - render the admin dashboard in headless Chromium and check what it shows.

Starts `meridian dev` (3 regions, on ports away from the defaults), makes some traffic (requests,
a failover, a rate limit), then loads the dashboard of the first node in headless Chromium twice:
--dump-dom (the DOM after its scripts ran) and --screenshot. Checks that the page rendered the
live cluster (every node, a leader, the regions' service health, the forwards between regions, the
quota) and that the screenshot is a real picture of it (a PNG of the asked size, not blank).

Usage: scripts/dashboard_check.py [--keep] [--out PNG]   (scripts/dashboard-check.sh wraps it)
Environment: MERIDIAN_BIN (default target/debug/meridian), CHROMIUM (default: chromium on PATH).
Exit status: 0 pass, 1 a check failed, 2 Chromium or meridian missing. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

BASE, ADMIN, INTERNAL = 38080, 39901, 37940
WIDTH, HEIGHT = 1400, 1000


def log(msg: str) -> None:
    print(f"dashboard-check: {msg}", file=sys.stderr, flush=True)


def http(url: str, headers: dict[str, str] | None = None, timeout: float = 3.0) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def png_pixels(path: str) -> tuple[int, int, set[tuple[int, ...]]]:
    """Width, height and the set of distinct colours of an 8-bit RGB/RGBA non-interlaced PNG."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, width = 8, b"", 0
    height = depth = ctype = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    if depth != 8 or ctype not in (2, 6):
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {ctype})")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    colours: set[tuple[int, ...]] = set()
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % 4 == 0:
            for x in range(0, width, 4):
                colours.add(tuple(line[x * bpp:x * bpp + 3]))
        prev = line
    return width, height, colours


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument("--out", help="also copy the screenshot here")
    args = ap.parse_args()
    binary = os.environ.get("MERIDIAN_BIN", "target/debug/meridian")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not os.access(binary, os.X_OK):
        log(f"{binary} not found; build it first (cargo build -p meridian)")
        return 2
    if not chromium:
        log("chromium not found (Debian: apt-get install chromium)")
        return 2
    scratch = tempfile.mkdtemp(prefix="meridian-dashboard-")
    failures: list[str] = []
    dev = subprocess.Popen(
        [os.path.abspath(binary), "dev", "--base-port", str(BASE), "--admin-base-port", str(ADMIN),
         "--internal-base-port", str(INTERNAL), "--dir", os.path.join(scratch, "dev")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=scratch,
    )
    try:
        deadline = time.time() + 90
        for line in dev.stdout:  # type: ignore[union-attr]
            if "ready in" in line:
                break
            if time.time() > deadline:
                raise RuntimeError("meridian dev did not become ready within 90 s")
        else:
            raise RuntimeError(f"meridian dev exited ({dev.wait()})")
        data, admin, up_us = f"http://127.0.0.1:{BASE}", f"http://127.0.0.1:{ADMIN}", f"http://127.0.0.1:{INTERNAL + 60}"
        log("cluster ready; making traffic: requests, a failover, a rate limit")
        for _ in range(20):
            http(data + "/hello")
        http(up_us + "/_control/fail?status=503")
        # Until another region answers: right after start, gossip may not yet carry the other
        # regions' service health, and until it does there is nowhere to fail over to.
        forwarded, deadline = 0, time.time() + 15
        while forwarded < 10 and time.time() < deadline:
            status, headers, _ = http(data + "/hello")
            region = {k.lower(): v for k, v in headers.items()}.get("x-meridian-region")
            if status == 200 and region not in (None, "us"):
                forwarded += 1
            else:
                time.sleep(0.1)
        if forwarded == 0:
            failures.append("no request was answered by another region while the us upstream failed")
        http(up_us + "/_control/reset")
        limited = [http(data + "/limited", {"x-tenant": "acme"})[0] for _ in range(15)]
        if 429 not in limited:
            failures.append(f"the quota did not limit: {limited}")
        time.sleep(1.5)  # one report round, so /quotas has counts

        common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  f"--window-size={WIDTH},{HEIGHT}", "--virtual-time-budget=4000",
                  f"--user-data-dir={os.path.join(scratch, 'chrome')}"]
        dom = subprocess.run(common + ["--dump-dom", admin + "/"], capture_output=True, text=True, timeout=60).stdout
        shot = os.path.join(scratch, "dashboard.png")
        subprocess.run(common + [f"--screenshot={shot}", admin + "/"], capture_output=True, timeout=60)

        checks = {
            "every node listed": all(f'data-node="{n}"' in dom for n in ("us-1", "eu-1", "ap-1")),
            "every region": all(f'data-region="{r}"' in dom for r in ("us", "eu", "ap")),
            "a leader": "role-leader" in dom,
            "routing version": ">v1<" in dom or "v1" in dom,
            "service health by region": "echo" in dom and "1/1" in dom,
            "forwards us → eu/ap": "us → eu" in dom or "us → ap" in dom,
            "the quota": 'data-quota="per-tenant"' in dom and "refused" in dom,
            "the audit trail": 'data-audit="1"' in dom and "bootstrap" in dom,
            "no error shown": 'id="status" class="err"' not in dom and "updated" in dom,
        }
        for what, ok in checks.items():
            log(f"{'PASS' if ok else 'FAIL'} dom: {what}")
            if not ok:
                failures.append(f"dom: {what}")
        if not os.path.exists(shot):
            failures.append("no screenshot")
        else:
            w, h, colours = png_pixels(shot)
            ok = (w, h) == (WIDTH, HEIGHT) and len(colours) >= 20
            log(f"{'PASS' if ok else 'FAIL'} screenshot {w}x{h}, {len(colours)} distinct colours sampled")
            if not ok:
                failures.append(f"screenshot {w}x{h} with {len(colours)} colours")
            if args.out:
                shutil.copy(shot, args.out)
                log(f"screenshot copied to {args.out}")
        if failures:
            with open(os.path.join(scratch, "dom.html"), "w") as f:
                f.write(dom)
    except Exception as e:  # noqa: BLE001 - report any setup failure as a failed check
        failures.append(str(e))
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            dev.kill()
        if failures or args.keep:
            log(f"scratch kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        log("FAILED: " + "; ".join(failures))
        return 1
    log("dashboard OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
