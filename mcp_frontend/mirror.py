"""A local copy of one desktop's framebuffer, kept current from the VNC worker's PUB stream.

The clone pattern of broker/wire.py: subscribe first, then ask for a snapshot, then apply
every frame message of the snapshot's epoch whose seq follows it. Messages that arrive
while the snapshot request is in flight simply wait in the SUB socket's queue and are
skipped or applied afterwards by their seq. A new epoch (a new RFB session) or a gap in
the seqs (ZeroMQ dropped a message at its high-water mark) means: take a new snapshot.

Tools answer from this copy (screenshot, status, changes) without any round trip. Each
applied change gets a `version`: this frontend's own counter, which keeps rising across
reconnects (the worker's seq restarts with every epoch), so `changes(since=version)` and
"has anything changed since I sent that click" have one meaning. Damage of the last
HISTORY versions is kept for `changes`.

Waiting is event driven: `wait_change(after, timeout)` returns as soon as a version newer
than `after` is applied, on an asyncio.Event that every applied change sets.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import zmq
import zmq.asyncio

from broker import wire
from broker.boxes import merge_boxes

log = logging.getLogger("vncmcp.mcp.mirror")

HISTORY = 4096              # damage entries kept for changes(since=...)
SNAPSHOT_TIMEOUT = 3.0      # seconds for one snapshot request
RETRY_AFTER = 1.0           # seconds between snapshot attempts while the worker is away
WORKER_SILENCE = 3.5        # seconds without a message (state comes every second): worker gone

Rect = tuple[int, int, int, int]  # x, y, w, h in desktop pixels


@dataclass
class Change:
    version: int
    t: float                      # wall-clock time the change was applied
    rects: list[Rect]             # damaged rectangles (the whole desktop for a new snapshot)


@dataclass
class DesktopState:
    """The worker's latest state message (connection, name, size), defaults until one comes."""
    connected: bool = False
    since: float | None = None
    error: str | None = None
    name: str | None = None
    server: str | None = None
    heard: float | None = None    # when the worker last said anything (monotonic)
    raw: dict = field(default_factory=dict)


class FrameMirror:
    def __init__(self, ctx: zmq.asyncio.Context, runtime_dir: str, desktop: str):
        self.desktop = desktop
        self._ctx = ctx
        self.pub_endpoint, self.ctl_endpoint = wire.vnc_endpoints(runtime_dir, desktop)
        self.frame: np.ndarray | None = None   # (h, w, 4) uint8, R G B X
        self.epoch: int | None = None
        self.seq = 0                  # the worker's seq of the last applied frame
        self.version = 0              # this mirror's change counter (see module docstring)
        self.frame_time: float | None = None   # wall clock of the last applied change
        self.cursor: tuple[int, int] | None = None  # as the server reported it
        self.clipboard: str | None = None
        self.bells = 0
        self.state = DesktopState()
        self.history: collections.deque[Change] = collections.deque(maxlen=HISTORY)
        self.snapshots = 0
        self.updates = 0
        self._changed = asyncio.Event()
        self._sub: zmq.asyncio.Socket | None = None
        self._req: wire.Requester | None = None
        self._task: asyncio.Task | None = None
        self._need_snapshot = True
        self._snapshot_error: str | None = None
        self._last_attempt = 0.0
        self._first_frame = asyncio.Event()
        self.first_attempt = asyncio.Event()   # set once the first snapshot request has an outcome

    # -- lifetime -----------------------------------------------------------------------
    async def start(self) -> None:
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        # Frames are big; a deep queue rather than a lost message (a loss costs a snapshot).
        self._sub.setsockopt(zmq.RCVHWM, 2000)
        for topic in (wire.TOPIC_FRAME, wire.TOPIC_STATE, wire.TOPIC_CLIP, wire.TOPIC_BELL):
            self._sub.setsockopt(zmq.SUBSCRIBE, topic)
        self._sub.connect(self.pub_endpoint)
        self._req = wire.Requester(self._ctx, self.ctl_endpoint)
        self._task = asyncio.create_task(self._run(), name=f"mirror-{self.desktop}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._req is not None:
            self._req.close()
        if self._sub is not None:
            self._sub.close()

    # -- what tools read ------------------------------------------------------------------
    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the mirrored frame, (0, 0) before the first snapshot."""
        if self.frame is None:
            return 0, 0
        return self.frame.shape[1], self.frame.shape[0]

    @property
    def live(self) -> bool:
        """The mirror is current: the worker is connected, still talking, and we hold its
        epoch's frame."""
        return (self.frame is not None and self.state.connected and not self._need_snapshot
                and not self._worker_silent())

    def _worker_silent(self) -> float | None:
        """Seconds since the worker last said anything, when that is too long for a living
        worker (it publishes its state every second)."""
        if self.state.heard is None:
            return None
        quiet = time.monotonic() - self.state.heard
        return quiet if quiet > WORKER_SILENCE else None

    @property
    def problem(self) -> str | None:
        """Why the mirror is not live, in words for a tool result (None when it is)."""
        if self.live:
            return None
        silent = self._worker_silent()
        if silent is not None:
            return (f"desktop {self.desktop}: its VNC worker has been silent for {silent:.0f} s "
                    "(restarting?); try again shortly")
        if not self.state.connected and self.state.since is not None:
            since = time.strftime("%H:%M:%S", time.localtime(self.state.since))
            reason = f" ({self.state.error})" if self.state.error else ""
            return f"desktop {self.desktop} is disconnected since {since}{reason}, reconnecting"
        if self.state.heard is None:
            detail = f": {self._snapshot_error}" if self._snapshot_error else ""
            return (f"desktop {self.desktop}: no VNC worker answers at {self.ctl_endpoint}{detail} "
                    "(is the vncmcp service running?)")
        return f"desktop {self.desktop}: waiting for the first frame" + (
            f" ({self._snapshot_error})" if self._snapshot_error else "")

    def changes_since(self, version: int) -> tuple[list[Change], bool]:
        """Changes after `version`, and whether history reaches back that far."""
        out = [c for c in self.history if c.version > version]
        complete = not self.history or self.history[0].version <= version + 1 or version >= self.version
        return out, complete

    async def wait_change(self, after: int, timeout: float) -> bool:
        """Wait until a version newer than `after` is applied; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.version <= after:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            event = self._changed
            try:
                await asyncio.wait_for(event.wait(), left)
            except asyncio.TimeoutError:
                return self.version > after
        return True

    async def wait_quiet(self, quiet: float, limit: float, region: Rect | None = None) -> bool:
        """Wait until no change (touching `region`, if given) for `quiet` seconds, at most
        `limit` seconds. True if it went quiet in time."""
        deadline = time.monotonic() + limit
        last_change = time.monotonic()
        seen = self.version
        while True:
            now = time.monotonic()
            if now - last_change >= quiet:
                return True
            if now >= deadline:
                return False
            wait = min(quiet - (now - last_change), deadline - now)
            if await self.wait_change(seen, wait):
                fresh, _ = self.changes_since(seen)
                seen = self.version
                if region is None or any(rects_touch(r, region) for c in fresh for r in c.rects):
                    last_change = time.monotonic()

    async def wait_first_frame(self, timeout: float) -> bool:
        if self.frame is not None:
            return True
        try:
            await asyncio.wait_for(self._first_frame.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def copy_region(self, region: Rect | None = None) -> np.ndarray:
        """A private copy (R, G, B, X; contiguous) of the frame or a region of it, safe to
        hand to a thread while the mirror keeps applying updates. Four channels because
        copying whole pixels is a memcpy, dropping X is a slow gather (13 ms at 1080p)."""
        if self.frame is None:
            raise RuntimeError("no frame yet")
        x, y, w, h = region or (0, 0, *self.size)
        return self.frame[y:y + h, x:x + w].copy()

    # -- the stream -------------------------------------------------------------------------
    async def _run(self) -> None:
        poller_timeout = int(RETRY_AFTER * 1000)
        while True:
            # While the worker says it is disconnected a snapshot would only be refused; its
            # next "connected" state message asks for one at once.
            may_work = self.state.connected or self.state.heard is None
            if self._need_snapshot and may_work and time.monotonic() - self._last_attempt >= RETRY_AFTER:
                await self._snapshot()
            if not await self._sub.poll(poller_timeout):
                continue
            parts = await self._sub.recv_multipart(copy=False)
            try:
                self._handle(bytes(parts[0].buffer), wire.unpack(parts[1].buffer), parts[2:])
            except (KeyError, ValueError, TypeError) as e:
                # A malformed message must not stop the mirror: resynchronise instead.
                log.warning("desktop %s: bad message from the worker (%s); taking a new snapshot", self.desktop, e)
                self._need_snapshot = True

    def _handle(self, topic: bytes, header: dict, buffers: list) -> None:
        self.state.heard = time.monotonic()
        if topic == wire.TOPIC_STATE:
            self._apply_state(header)
        elif topic == wire.TOPIC_CLIP:
            self.clipboard = header.get("text", "")
        elif topic == wire.TOPIC_BELL:
            self.bells += 1
        elif topic == wire.TOPIC_FRAME:
            self._apply_frame(header, buffers)

    def _apply_state(self, header: dict) -> None:
        s = self.state
        was_connected = s.connected
        s.connected = bool(header.get("connected"))
        s.since, s.error = header.get("since"), header.get("error")
        s.name, s.server = header.get("name"), header.get("server")
        s.raw = header
        if s.connected and (not was_connected or header.get("epoch") != self.epoch):
            self._need_snapshot = True
            self._last_attempt = 0.0  # now, not after the retry pause

    def _apply_frame(self, header: dict, buffers: list) -> None:
        if self._need_snapshot or self.frame is None:
            return  # the snapshot to come will contain it
        if header["epoch"] != self.epoch:
            self._need_snapshot = True
            self._last_attempt = 0.0
            return
        if header["seq"] <= self.seq:
            return  # already in the snapshot
        if header["seq"] != self.seq + 1:
            log.info("desktop %s: frame %d after %d, a message was dropped; new snapshot",
                     self.desktop, header["seq"], self.seq)
            self._need_snapshot = True
            self._last_attempt = 0.0
            return
        w, h = header["w"], header["h"]
        if header.get("resized") or (w, h) != self.size:
            self.frame = np.zeros((h, w, 4), np.uint8)
        rects = []
        for (x, y, rw, rh), buf in zip(header["rects"], buffers):
            self.frame[y:y + rh, x:x + rw] = np.frombuffer(buf.buffer, np.uint8).reshape(rh, rw, 4)
            rects.append((x, y, rw, rh))
        if "cursor" in header:
            self.cursor = (header["cursor"]["x"], header["cursor"]["y"])
        self.seq = header["seq"]
        self.updates += 1
        self._changed_now(rects, header.get("t"))

    async def _snapshot(self) -> None:
        self._last_attempt = time.monotonic()
        try:
            header, buffers = await self._req.request(b"snapshot", timeout=SNAPSHOT_TIMEOUT)
        except wire.WireError as e:
            self._snapshot_error = str(e)
            return
        finally:
            self.first_attempt.set()
        w, h = header["w"], header["h"]
        frame = np.frombuffer(buffers[0], np.uint8).reshape(h, w, 4).copy()
        # What differs from the frame we held is what changed (after a dropped message or a
        # reconnect); the first frame, or one of another size, is all new.
        damage = diff_rects(self.frame, frame) if self.frame is not None else [(0, 0, w, h)]
        self.frame, self.epoch, self.seq = frame, header["epoch"], header["seq"]
        self._apply_state(header)
        self.state.heard = time.monotonic()
        self._need_snapshot = False
        self._snapshot_error = None
        self.snapshots += 1
        self._changed_now(damage, None)
        self._first_frame.set()

    def _changed_now(self, rects: list[Rect], t: float | None) -> None:
        self.version += 1
        self.frame_time = t or time.time()
        self.history.append(Change(self.version, self.frame_time, rects))
        event, self._changed = self._changed, asyncio.Event()
        event.set()


# -- rectangle helpers (x, y, w, h) ------------------------------------------------------------
DIFF_TILE = 32
RGB_MASK = np.uint32(0x00FFFFFF) if np.little_endian else np.uint32(0xFFFFFF00)


def diff_rects(old: np.ndarray, new: np.ndarray, tile: int = DIFF_TILE) -> list[Rect]:
    """Where two frames differ, as runs of changed tile x tile squares along each tile row."""
    h, w = new.shape[:2]
    if old.shape != new.shape:
        return [(0, 0, w, h)]
    # Compare whole pixels as uint32 with the padding byte masked off.
    changed = ((old.view(np.uint32)[..., 0] ^ new.view(np.uint32)[..., 0]) & RGB_MASK) != 0
    th, tw = -(-h // tile), -(-w // tile)
    padded = np.zeros((th * tile, tw * tile), bool)
    padded[:h, :w] = changed
    tiles = padded.reshape(th, tile, tw, tile).any(axis=(1, 3))
    rects = []
    for ty in range(th):
        row = tiles[ty]
        tx = 0
        while tx < tw:
            if not row[tx]:
                tx += 1
                continue
            start = tx
            while tx < tw and row[tx]:
                tx += 1
            x, y = start * tile, ty * tile
            rects.append((x, y, min(tx * tile, w) - x, min(y + tile, h) - y))
    return rects
def rects_touch(a: Rect, b: Rect, gap: int = 0) -> bool:
    """Whether two rectangles overlap or come within `gap` pixels of each other."""
    return (a[0] < b[0] + b[2] + gap and b[0] < a[0] + a[2] + gap and
            a[1] < b[1] + b[3] + gap and b[1] < a[1] + a[3] + gap)


def union(a: Rect, b: Rect) -> Rect:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return x0, y0, x1 - x0, y1 - y0


def intersect(a: Rect, b: Rect) -> Rect | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def merge_rects(rects: list[Rect], gap: int = 24, limit: int = 8) -> list[Rect]:
    """Few readable regions from many damage rectangles: join rectangles that touch or lie
    within `gap` pixels, then, while more than `limit` remain, join the closest pair."""
    unique = dict.fromkeys(tuple(r) for r in rects if r[2] > 0 and r[3] > 0)
    merged = merge_boxes([(x, y, x + w, y + h) for x, y, w, h in unique], gap)
    boxes = [(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in merged]
    while len(boxes) > limit:
        best = None
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                u = union(boxes[i], boxes[j])
                cost = u[2] * u[3] - boxes[i][2] * boxes[i][3] - boxes[j][2] * boxes[j][3]
                if best is None or cost < best[0]:
                    best = (cost, i, j, u)
        _, i, j, u = best
        boxes = [b for k, b in enumerate(boxes) if k not in (i, j)] + [u]
    return sorted(boxes, key=lambda r: (r[1], r[0]))
