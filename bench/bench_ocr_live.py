"""OCR service benchmark: the real broker and OCR worker processes, 1 worker then 2.

    .venv/bin/python bench/bench_ocr_live.py [--runs 3]

Prints, with 1 and with 2 workers side by side:
  - cold full frame (empty cache) on the sample screens (../shared/ocr-samples) and on a live
    1920x1080 Xvnc desktop full of xterms, fed through the broker as `ocr_image` jobs:
    median wall time and word recall (bag of words against the known text), once with a
    new broker and new worker processes before each run (nothing learned: the target's
    case; a broker passes on what its workers learned, so new workers alone would not do)
    and once with workers that read the screen before (the glyphs of its terminal fonts
    known);
and with 2 workers:
  - one typed character: from the VNC worker publishing the damage to a store update
    received by a subscriber (median), and the broker's own damage -> store figure;
  - a one-line scroll of a full xterm, timed the same way;
  - an unchanged redraw (an xterm rewriting the same line, Xvnc with CompareFB=0): the
    broker's pass time when the pixels turn out the same (median);
  - the live desktop's store after the broker read it by itself: recall;
  - per-worker RSS.
Targets (issue 3): cold 1080p <= 0.45 s with 2 workers at >= 97 % recall; typed line
<= 40 ms damage -> store; unchanged frame <= 2 ms.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402

from broker import wire  # noqa: E402
from broker.demo import start_xvnc  # noqa: E402
from broker.ocr_client import OcrClient  # noqa: E402
from broker.procstat import rss_mb  # noqa: E402
from workers.ocr_scoring import located_correct, recall  # noqa: E402
from workers.rfb.keysyms import char_keysym  # noqa: E402

SAMPLES = os.path.join(ROOT, "..", "shared", "ocr-samples")
VOCABULARY = ("the quick brown fox jumps over lazy dog invoice paid total report server started config "
              "error warning connection refused retrying seconds update install package version module "
              "function return value window screen button cancel save open close file folder user admin "
              "network address port 8080 2024-03-14 10:02:15 42 1,249.99 /var/log/syslog README.md "
              "build.gradle main.py (done) [ok] x86_64 alpha beta gamma delta").split()
# (font, columns, rows, geometry position, extra xterm args): a mixed 1080p screen.
SCROLL_XTERM = "+1460+520"   # 48x24 cells of 9x15 in the free corner of the screen
XTERMS = [("10x20", 78, 24, "+0+0", []), ("9x15", 100, 32, "+800+0", []),
          ("6x13", 130, 36, "+0+500", []), ("7x14", 90, 22, "+800+500", ["-rv"])]


def text_block(rng: random.Random, columns: int, rows: int) -> list[str]:
    lines = []
    for _ in range(rows - 1):
        words, length = [], 0
        target = rng.randint(columns // 3, columns - 4)
        while True:
            word = rng.choice(VOCABULARY)
            if length + len(word) + 1 > target:
                break
            words.append(word)
            length += len(word) + 1
        lines.append(" ".join(words))
    return lines


class Service:
    def __init__(self, port: int):
        self.runtime_dir = tempfile.mkdtemp(prefix="vncmcp-bench-")
        self.env = dict(os.environ, VNCMCP_RUNTIME_DIR=self.runtime_dir, VNCMCP_HOST="127.0.0.1",
                        VNCMCP_PORT=str(port), PYTHONPATH=ROOT)
        self.procs: list[subprocess.Popen] = []

    def start(self, verb: str) -> subprocess.Popen:
        log = open(os.path.join(self.runtime_dir, f"{verb}-{len(self.procs)}.log"), "wb")
        proc = subprocess.Popen([sys.executable, "-m", "broker.cli", verb], cwd=ROOT, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def wait_workers(client: OcrClient, count: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = await client.status()
            if len(status["workers"]) >= count:
                return status
        except wire.WireError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{count} OCR workers did not come up")


async def wait_idle(client: OcrClient, quiet: float = 0.5, timeout: float = 60.0) -> None:
    """Until no OCR job has been queued or running for `quiet` seconds: the broker's own
    reading of the live desktop must not run alongside the cold-frame timings."""
    deadline = time.monotonic() + timeout
    idle_since = None
    while time.monotonic() < deadline:
        status = await client.status()
        if status["queue"] or status["inflight"]:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= quiet:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the OCR pool did not go idle")


async def fresh_pool(service: "Service", client: OcrClient, count: int) -> None:
    """A new broker and `count` new OCR workers in `service`, which has no desktop of its
    own: nothing learned anywhere (the workers' glyph tables, workers/ocr_glyphs.py, and
    the broker's relay of them start empty), as after a restart of the whole service."""
    service.stop()
    service.procs = []
    broker = service.start("broker")
    pids = {service.start("ocr-worker").pid for _ in range(count)}
    deadline = time.monotonic() + 60
    while True:
        try:
            status = await client.status()
            if status["pid"] == broker.pid and {w["pid"] for w in status["workers"]} == pids:
                return
        except wire.WireError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the new broker and OCR workers did not come up")
        await asyncio.sleep(0.1)


async def cold(client: OcrClient, gray: np.ndarray, runs: int, restart=None) -> tuple[float, list[tuple[str, list]]]:
    """Median time of a full frame with the broker's line cache bypassed. With `restart`
    (an async function), the broker and workers are new before each run; without, they
    have read this very screen before, so its fonts are known to their glyph tables."""
    times, words = [], []
    for _ in range(runs):
        if restart is not None:
            await restart()
        started = time.perf_counter()
        result = await client.ocr_image(np.ascontiguousarray(gray), gray.shape[1], gray.shape[0], cache=False,
                                        timeout=120)
        times.append(time.perf_counter() - started)
        words = [(w["text"], w["box"]) for line in result["lines"] for w in line["words"]]
    return statistics.median(times), words


def load_samples() -> dict:
    from PIL import Image

    from workers import ocr_engine
    out = {}
    for name in ("desk_mixed", "synth_ui", "typing_f1"):
        path = os.path.join(SAMPLES, f"{name}.png")
        if os.path.exists(path):
            with open(os.path.join(SAMPLES, f"{name}.json")) as f:
                truth = json.load(f)["words"]
            out[name] = (ocr_engine.to_gray(np.asarray(Image.open(path).convert("RGB"))), truth)
    return out


async def input_latency(ctx, service: Service, pointer: tuple[int, int], keysyms: list[int]) -> list[float]:
    """Press each key with the pointer over an xterm (the focus follows it: no window
    manager); time the VNC worker publishing the damage -> a store update received."""
    pub, ctl = wire.vnc_endpoints(service.runtime_dir, "default")
    damage = ctx.socket(zmq.SUB)
    damage.setsockopt(zmq.SUBSCRIBE, wire.TOPIC_DAMAGE)
    damage.connect(pub)
    store = ctx.socket(zmq.SUB)
    store.setsockopt(zmq.SUBSCRIBE, wire.TOPIC_OCR)
    store.connect(wire.broker_endpoints(service.runtime_dir)[2])
    vnc = wire.Requester(ctx, ctl)
    await asyncio.sleep(0.5)
    await vnc.request(b"input", {"actions": [{"pointer": list(pointer), "buttons": 0}]})
    await asyncio.sleep(0.5)
    latencies = []
    for k in keysyms:
        while await damage.poll(0):
            await damage.recv_multipart()
        while await store.poll(0):
            await store.recv_multipart()
        await vnc.request(b"input", {"actions": [{"key": k, "down": True}, {"key": k, "down": False}]})
        if not await damage.poll(2000):
            continue
        header = wire.unpack((await damage.recv_multipart())[1])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and await store.poll(int((deadline - time.monotonic()) * 1000)):
            update = wire.unpack((await store.recv_multipart())[1])
            if update["seq"] >= header["seq"]:
                latencies.append((time.time() - header["t"]) * 1000)
                break
        await asyncio.sleep(0.15)
    vnc.close()
    damage.close()
    store.close()
    return latencies


async def amain(args) -> None:
    rng = random.Random(42)
    desktop = start_xvnc(geometry="1920x1080", extra_args=["-CompareFB=0"])
    workdir = desktop.workdir
    expected: list[str] = []
    for i, (font, cols, rows, pos, extra) in enumerate(XTERMS):
        lines = text_block(rng, cols, rows)
        expected += " ".join(lines).split()
        path = os.path.join(workdir, f"text{i}.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        desktop.xterm(geometry=f"{cols}x{rows}{pos}", font=font, extra=extra,
                      command=["sh", "-c", f"cat {path}; exec sleep 100000"])
    desktop.xterm(geometry="60x3+1300+1000", font="10x20", command=["sh", "-c", "stty -icanon; exec cat"])
    # A terminal at its last row: every Return scrolls all of its lines up by one.
    scroll_path = os.path.join(workdir, "scroll.txt")
    scroll_lines = text_block(rng, 48, 24)
    expected += " ".join(scroll_lines).split()
    with open(scroll_path, "w") as f:
        f.write("\n".join(scroll_lines) + "\n")
    desktop.xterm(geometry=f"48x24{SCROLL_XTERM}", font="9x15",
                  command=["sh", "-c", f"cat {scroll_path}; stty -icanon; exec cat"])
    desktop.xterm(geometry="30x1+0+1050", font="9x15",
                  command=["sh", "-c", "while :; do printf '\\rthe same line again'; sleep 0.1; done"])
    service = Service(desktop.port)
    # Cold frames are timed in a service of their own, a broker and workers without a
    # desktop that are started anew before each run: the desktop's service reads the
    # live screen by itself and would teach its workers the fonts.
    pool = Service(desktop.port)
    ctx = zmq.asyncio.Context()
    client = OcrClient(ctx, service.runtime_dir)
    pool_client = OcrClient(ctx, pool.runtime_dir)
    samples = load_samples()
    table: dict[str, dict[int, tuple[float, float]]] = collections.defaultdict(dict)
    known: dict[str, dict[int, tuple[float, float]]] = collections.defaultdict(dict)
    located: dict[str, float | None] = {}
    try:
        service.start("vnc-worker")
        service.start("broker")
        for _ in range(2):
            service.start("ocr-worker")
        await wait_workers(client, 2)
        await asyncio.sleep(2.0)   # let the xterms draw (the broker's first pass: wait_idle)
        vnc = wire.Requester(ctx, wire.vnc_endpoints(service.runtime_dir, "default")[1])
        header, buffers = await vnc.request(b"snapshot")
        from workers import ocr_engine
        live = ocr_engine.to_gray(np.frombuffer(buffers[0], np.uint8).reshape(header["h"], header["w"], 4))
        vnc.close()
        await wait_idle(client)
        for count in (1, 2):
            async def restart():
                await fresh_pool(pool, pool_client, count)
            for name, gray, truth in [(n, g, [t["text"] for t in tr]) for n, (g, tr) in samples.items()] + [
                    ("live 1080p", live, expected)]:
                await wait_idle(client)
                seconds, words = await cold(pool_client, gray, args.runs, restart)
                table[name][count] = (seconds, recall(truth, (w for w, _ in words)))
                if name in samples:
                    located[name] = located_correct(samples[name][1], words)
                seconds, words = await cold(pool_client, gray, args.runs)
                known[name][count] = (seconds, recall(truth, (w for w, _ in words)))
        pool.stop()

        print(f"# vncmcp OCR service benchmark: broker + N OCR worker processes, {os.cpu_count()} cores, "
              f"median of {args.runs}")
        print(f"{'cold full frame':<16} {'1 worker':>20} {'2 workers':>20}   speed-up  located-correct")
        print("new broker and workers (nothing learned)")
        for name, row in table.items():
            one, two = row[1], row[2]
            where = f"{located[name]:.3f}" if located.get(name) is not None else "-"
            print(f"{name:<16} {one[0] * 1000:8.0f} ms  r {one[1]:.3f} {two[0] * 1000:8.0f} ms  r {two[1]:.3f}"
                  f"   {one[0] / two[0]:.2f}x     {where}")
        print("workers that read the screen before (its terminal fonts' glyphs known)")
        for name, row in known.items():
            one, two = row[1], row[2]
            print(f"{name:<16} {one[0] * 1000:8.0f} ms  r {one[1]:.3f} {two[0] * 1000:8.0f} ms  r {two[1]:.3f}"
                  f"   {one[0] / two[0]:.2f}x   new/known {table[name][2][0] / two[0]:.2f}x")

        # The broker's own reading of the live desktop (damage-driven store).
        snap = await client.snapshot("default")
        store_words = [w["text"] for line in snap["lines"] for w in line["words"]]
        print(f"live store       {len(snap['lines'])} lines, recall {recall(expected, store_words):.3f} "
              f"of the {len(expected)} words shown")

        text = "the quick brown fox jumps 12345 over" * 3
        latencies = await input_latency(ctx, service, (1500, 1000), [char_keysym(c) for c in text[:args.chars]])
        scrolls = await input_latency(ctx, service, (1600, 700), [char_keysym("\r")] * args.scrolls)
        status = await client.status()
        desk = status["desktops"]["default"]
        if latencies:
            print(f"typed character  damage published -> store update received: median "
                  f"{statistics.median(latencies):.1f} ms, p90 {sorted(latencies)[int(0.9 * len(latencies))]:.1f} ms "
                  f"(n={len(latencies)}); broker's damage->store p50 {desk['damage_to_store_ms_p50']} ms")
        if scrolls:
            print(f"scroll           one line, all 24 rows of a 9x15 xterm move: damage -> store median "
                  f"{statistics.median(scrolls):.1f} ms (n={len(scrolls)})")
        print(f"unchanged redraw broker pass when the pixels are the same: median {desk['unchanged_ms_p50']} ms "
              f"({desk['unchanged']} of {desk['passes']} passes)")
        print(f"jobs             p50 {status['latency_ms']['p50']} ms, p95 {status['latency_ms']['p95']} ms; "
              f"cache {status['cache']}")
        rss = [f"{w['pid']}: {rss_mb(w['pid']):.0f} MB" for w in status["workers"] if rss_mb(w["pid"])]
        print(f"worker RSS       {', '.join(rss)}; broker {rss_mb(status['pid']):.0f} MB")
    finally:
        client.close()
        pool_client.close()
        pool.stop()
        service.stop()
        desktop.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chars", type=int, default=20, help="characters typed for the latency figure")
    ap.add_argument("--scrolls", type=int, default=10, help="Returns pressed for the scroll figure")
    args = ap.parse_args()
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
