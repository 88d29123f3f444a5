"""The OCR broker as the MCP frontend (and tests, and benchmarks) see it.

    client = OcrClient(ctx, runtime_dir)
    answer = await client.read("default", region=(0, 0, 800, 600), timeout=5.0)
    #  {"epoch", "seq", "rev", "lines": [{"text", "box", "conf", "words", "seq"}], "stale"}
    store = await client.snapshot("default")
    async for update in client.updates("default"): ...   # first a reset, then changes
    mirror = OcrMirror(client, "default"); await mirror.start(); await mirror.wait_changed(2.0)
    await client.status()

Every failure is a broker.wire.WireError whose message says what is wrong: "OCR broker not
running", "OCR unavailable: ...", a deadline, a disconnected desktop. The wire format is in
broker/wire.py ("OCR broker").
"""
from __future__ import annotations

import asyncio
import os
from typing import AsyncIterator

import zmq
import zmq.asyncio

from broker import wire

Region = tuple[int, int, int, int]


class OcrClient:
    def __init__(self, ctx: zmq.asyncio.Context, runtime_dir: str):
        self.ctx = ctx
        self.runtime_dir = runtime_dir
        _jobs, self.ctl_endpoint, self.pub_endpoint = wire.broker_endpoints(runtime_dir)
        # One Requester carries one request at a time; concurrent tool calls each take one.
        self._idle: list[wire.Requester] = []
        self._closed = False

    async def _request(self, verb: bytes, body: dict, timeout: float, buffers: list | None = None) -> dict:
        path = wire.ipc_path(self.ctl_endpoint)
        if path and not os.path.exists(path):
            raise wire.WireError(f"OCR broker not running (no {path})")
        requester = self._idle.pop() if self._idle else wire.Requester(self.ctx, self.ctl_endpoint)
        try:
            header, _ = await requester.request(verb, body, timeout=timeout, buffers=buffers)
        except wire.WireError as e:
            if str(e).startswith("no reply"):
                requester.close()
                raise wire.WireError(f"OCR broker not running or stuck: {e}") from None
            self._idle.append(requester)
            raise
        self._idle.append(requester)
        return header

    async def read(self, desktop: str, region: Region | None = None, timeout: float = 5.0,
                   stale_ok: bool = False) -> dict:
        """The text of the screen as it is now: waits until the store has caught up with the
        frame the VNC worker had when we asked (at most `timeout` s; then an error, or with
        stale_ok the text as it is, marked stale)."""
        body = {"desktop": desktop, "timeout_ms": int(timeout * 1000), "stale_ok": stale_ok}
        if region is not None:
            body["region"] = [int(v) for v in region]
        # The broker answers at its deadline; our own is a little later, for a broker that is gone.
        return await self._request(b"ocr_now", body, timeout + 2.0)

    async def snapshot(self, desktop: str) -> dict:
        return await self._request(b"ocr_snapshot", {"desktop": desktop}, 5.0)

    async def status(self) -> dict:
        return await self._request(b"status", {}, 5.0)

    async def ocr_image(self, pixels, w: int, h: int, channels: int = 1, cache: bool = True,
                        timeout: float = 30.0, test: dict | None = None) -> dict:
        """Any image through the broker's pipeline and worker pool (benchmarks and tests)."""
        body = {"w": w, "h": h, "channels": channels, "cache": cache, "timeout_ms": int(timeout * 1000)}
        if test:
            body["test"] = test
        return await self._request(b"ocr_image", body, timeout + 2.0, buffers=[pixels])

    async def updates(self, desktop: str) -> AsyncIterator[dict]:
        """The store as a stream: first {"reset": True, "added": all lines...}, then each
        update in rev order. Applying them in turn to an empty store mirrors the broker's.
        Subscribes before asking for the snapshot (clone pattern); a gap in rev, or a new
        broker, brings a fresh reset."""
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100000)
        sub.setsockopt(zmq.SUBSCRIBE, wire.TOPIC_OCR)
        sub.connect(self.pub_endpoint)
        try:
            rev = None
            while True:
                if rev is None:
                    snap = await self.snapshot(desktop)
                    rev = snap["rev"]
                    yield {"desktop": desktop, "rev": rev, "epoch": snap["epoch"], "seq": snap["seq"],
                           "reset": True, "removed": [], "added": snap["lines"]}
                    continue
                if not await sub.poll(2000):
                    # Quiet for a while: make sure the broker is still the one we mirror.
                    path = wire.ipc_path(self.pub_endpoint)
                    if path and not os.path.exists(path):
                        raise wire.WireError("OCR broker not running")
                    continue
                _topic, body = await sub.recv_multipart()
                update = wire.unpack(body)
                if update.get("desktop") != desktop or update["rev"] <= rev:
                    continue   # another desktop, or already in the snapshot
                if update["rev"] != rev + 1:
                    rev = None   # lost some (or the broker restarted): start over
                    continue
                rev = update["rev"]
                yield update
        finally:
            sub.close()

    def close(self) -> None:
        for requester in self._idle:
            requester.close()
        self._idle.clear()


class OcrMirror:
    """One desktop's OCR store kept current in this process (a frontend's copy)."""

    def __init__(self, client: OcrClient, desktop: str):
        self.client = client
        self.desktop = desktop
        self.lines: dict[tuple, dict] = {}
        self.epoch = None
        self.seq = -1
        self.rev = -1
        self.error: str | None = None
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None

    async def start(self, timeout: float = 5.0) -> None:
        self._task = asyncio.create_task(self._follow())
        await self.wait_changed(timeout)
        if self.rev < 0:
            raise wire.WireError(self.error or f"no OCR store for desktop {self.desktop} within {timeout:g} s")

    async def _follow(self) -> None:
        while True:
            try:
                async for update in self.client.updates(self.desktop):
                    self.apply(update)
                    async with self._changed:
                        self._changed.notify_all()
            except wire.WireError as e:
                self.error = str(e)
                async with self._changed:
                    self._changed.notify_all()
                await asyncio.sleep(1.0)

    def apply(self, update: dict) -> None:
        if update.get("reset"):
            self.lines.clear()
        for box in update.get("removed", ()):
            self.lines.pop(tuple(box), None)
        for line in update.get("added", ()):
            self.lines[tuple(line["box"])] = line
        self.epoch, self.seq, self.rev = update["epoch"], update["seq"], update["rev"]
        self.error = None

    def sorted_lines(self, region: Region | None = None) -> list[dict]:
        def inside(box):
            return region is None or (box[0] < region[2] and region[0] < box[2] and box[1] < region[3]
                                      and region[1] < box[3])
        return sorted((ln for b, ln in self.lines.items() if inside(b)), key=lambda ln: (ln["box"][1], ln["box"][0]))

    async def wait_changed(self, timeout: float) -> bool:
        """True when an update (of text or of seq) came within `timeout` s."""
        rev = self.rev
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.rev != rev or self.error), timeout)
            except asyncio.TimeoutError:
                return False
        return self.rev != rev

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
