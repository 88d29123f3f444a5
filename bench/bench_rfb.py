"""Benchmark of the RFB client and the VNC worker on a 1920x1080 Xvnc desktop on loopback.

    .venv/bin/python bench/bench_rfb.py [--frames 40] [--keys 30]

Prints: connect to first frame; full-frame throughput, bytes and client CPU per frame for
each encoding (the same desktop, one after another in one run); key-to-damage-published
latency through the worker (ZeroMQ); the worker's RSS and idle CPU.
Targets (issue 2): first frame <= 14 ms, Raw >= 126 fps, Tight >= 70, ZRLE >= 47,
key-to-update ~9 ms, worker idle CPU < 1 % of a core.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402

from broker import wire  # noqa: E402
from broker.demo import start_xvnc  # noqa: E402
from workers.rfb import FrameUpdate, RFBSession, SessionOptions  # noqa: E402
from workers.rfb import constants as C  # noqa: E402
from workers.rfb.decoders import DECODERS  # noqa: E402
from workers.rfb.keysyms import char_keysym  # noqa: E402

W, H = 1920, 1080


def busy_desktop(extra_args=()):
    """1080p Xvnc with a few xterms full of coloured text, so encodings have real work."""
    desktop = start_xvnc(geometry=f"{W}x{H}", extra_args=list(extra_args))
    desktop.xterm(geometry="150x60+0+0", command=["sh", "-c", "ls -lR /usr/share | head -80; sleep 3600"])
    desktop.xterm(geometry="100x40+960+0", extra=["-bg", "navy", "-fg", "yellow"],
                  command=["sh", "-c", "cat /etc/services; sleep 3600"])
    desktop.xterm(geometry="120x30+200+600", extra=["-bg", "white", "-fg", "darkred"],
                  command=["sh", "-c", "dmesg 2>/dev/null | head -40; env | sort; sleep 3600"])
    time.sleep(1.5)
    return desktop


async def first_frame_ms(port: int, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session = await RFBSession.open(SessionOptions(port=port))
        async for event in session.events():
            if isinstance(event, FrameUpdate) and event.rects and not event.resized:
                break
        out.append((time.perf_counter() - t0) * 1000)
        await session.close()
    return out


async def full_frames(port: int, encoding: int, frames: int) -> dict:
    options = SessionOptions(port=port, encodings=[encoding], continuous_updates=False,
                             extended_desktop_size=False,
                             jpeg_quality=8 if encoding == C.ENC_TIGHT else None)
    session = await RFBSession.open(options)
    events = session.events()

    async def one_full_frame():
        covered = 0
        while covered < W * H:
            event = await events.__anext__()
            if isinstance(event, FrameUpdate):
                covered += sum(w * h for _, _, w, h in event.rects)

    await one_full_frame()  # the initial frame
    times, cpu0, bytes0 = [], time.process_time(), session.bytes_read
    for _ in range(frames):
        t0 = time.perf_counter()
        await session.request_refresh()
        await one_full_frame()
        times.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    result = {"ms": statistics.median(times) * 1000, "fps": frames / sum(times),
              "kb_per_frame": (session.bytes_read - bytes0) / frames / 1024,
              "cpu_ms_per_frame": cpu / frames * 1000, "seen": sorted(session.info.encodings_seen)}
    await session.close()
    return result


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def worker_latency(runtime_dir: str, keys: int) -> list[float]:
    ctx = zmq.asyncio.Context()
    pub, ctl = wire.vnc_endpoints(runtime_dir, "default")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, wire.TOPIC_FRAME)
    sub.connect(pub)
    req = wire.Requester(ctx, ctl)
    for _ in range(100):
        try:
            await req.request(b"snapshot", timeout=1)
            break
        except wire.WireError:
            await asyncio.sleep(0.1)
    await req.request(b"input", {"actions": [{"pointer": [300, 300], "buttons": 0}]})
    await asyncio.sleep(0.5)
    latencies = []
    for i in range(keys):
        while await sub.poll(0):  # drain
            await sub.recv_multipart()
        k = char_keysym("abcdefghij"[i % 10])
        t0 = time.perf_counter()
        await req.request(b"input", {"actions": [{"key": k, "down": True}, {"key": k, "down": False}]})
        if await sub.poll(2000):
            await sub.recv_multipart()
            latencies.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.05)
    req.close()
    sub.close()
    ctx.term()
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--keys", type=int, default=30)
    ap.add_argument("--idle-seconds", type=float, default=10)
    args = ap.parse_args()
    print(f"# vncmcp RFB benchmark: {W}x{H} Xvnc on loopback, {os.cpu_count()} cores")
    desktop = busy_desktop()
    try:
        ff = asyncio.run(first_frame_ms(desktop.port, 10))
        print(f"connect to first frame      median {statistics.median(ff):7.1f} ms  (10 runs, min {min(ff):.1f})")
        order = [C.ENC_RAW, C.ENC_TIGHT, C.ENC_ZRLE, C.ENC_HEXTILE, C.ENC_ZLIB, C.ENC_RRE, C.ENC_TRLE]
        raw_fps = None
        for enc in [e for e in order if e in DECODERS]:
            r = asyncio.run(full_frames(desktop.port, enc, args.frames))
            name = C.encoding_name(enc)
            if name not in r["seen"]:
                print(f"full frames {name:<9}      server did not send {name} (sent {', '.join(r['seen'])})")
                continue
            raw_fps = raw_fps or r["fps"]
            print(f"full frames {name:<9}      {r['fps']:7.1f} fps  median {r['ms']:6.1f} ms  "
                  f"{r['kb_per_frame']:8.0f} KiB/frame  client CPU {r['cpu_ms_per_frame']:5.1f} ms/frame  "
                  f"({r['fps'] / raw_fps:.2f}x Raw)")
    finally:
        desktop.stop()

    # The worker as a process: key-to-damage-published, RSS, idle CPU.
    desktop = start_xvnc(geometry=f"{W}x{H}")
    desktop.xterm(geometry="100x30+0+0", command=["sh", "-c", "cat > /dev/null"])  # the tty echoes each key
    runtime_dir = tempfile.mkdtemp(prefix="vncmcp-bench-")
    env = dict(os.environ, VNCMCP_HOST="127.0.0.1", VNCMCP_PORT=str(desktop.port),
               VNCMCP_RUNTIME_DIR=runtime_dir, PYTHONPATH=ROOT)
    worker = subprocess.Popen([sys.executable, "-m", "broker.cli", "vnc-worker"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        lat = asyncio.run(worker_latency(runtime_dir, args.keys))
        lat.sort()
        print(f"key to damage published     median {statistics.median(lat):7.1f} ms  "
              f"p95 {lat[int(len(lat) * 0.95) - 1]:.1f} ms  ({len(lat)}/{args.keys} keys)")
        time.sleep(1.0)
        cpu0, t0 = proc_cpu_seconds(worker.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        idle = (proc_cpu_seconds(worker.pid) - cpu0) / (time.monotonic() - t0) * 100
        print(f"vnc worker idle CPU         {idle:7.2f} % of a core over {args.idle_seconds:g} s (target < 1 %)")
        print(f"vnc worker RSS              {proc_rss_mb(worker.pid):7.1f} MiB (1080p session)")
    finally:
        worker.terminate()
        worker.wait(10)
        desktop.stop()


if __name__ == "__main__":
    main()
