"""The OCR broker: damage in, an OCR store out (wire format: broker/wire.py, "OCR broker").

Per desktop it subscribes to the VNC worker's pixel-free damage and state topics, waits
for the damage to settle (DEBOUNCE_QUIET, at most DEBOUNCE_MAX), fetches only the damaged
rectangles (b"crop") into a greyscale mirror of the screen, and compares them with what it
had: pixels that did not really change cost nothing more. Around what did change it finds
the text lines (whole lines, even when one character changed), looks each line up in the
line cache by its pixels, and sends the unseen ones to the OCR workers as jobs.

The worker pool is the ZeroMQ guide's paranoid pirate: workers say ready, the longest idle
worker gets the next job, heartbeats go both ways, a worker that dies or hangs has its job
queued again in front, and a job that two workers died on is dropped and counted failed.
Jobs for frontends' requests (ocr_now, ocr_image) go before background work; every job has
a deadline.

The store (current lines with the frame seq each was read from) is published as the
ZeroMQ guide's clone pattern: snapshot on request, then updates sequenced by rev.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # BLAS threads would spin on our 2 cores

import asyncio  # noqa: E402
import collections  # noqa: E402
import itertools  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402

from broker import wire  # noqa: E402
from broker.boxes import Box, expand, intersects, merge_boxes  # noqa: E402,F401 (merge_boxes: tests)
from broker.child import Heartbeat, die_with_parent  # noqa: E402
from workers import ocr_engine  # noqa: E402

log = logging.getLogger("vncmcp.broker")

DEBOUNCE_QUIET = 0.008     # s without new damage before a pass starts...
DEBOUNCE_MAX = 0.150       # ...but never later than this after the first damage
WINDOW_MARGIN_X = 256      # px around changed pixels in which whole lines are looked for
WINDOW_MARGIN_Y = 48       # (>= the tallest line we expect, and enough rows for border removal)
JOB_MAX_LINES = 8          # lines per job, and total line width per job: small enough that
JOB_MAX_WIDTH = 800        # the last jobs of a cold screen end together on all workers, large
                           # enough that the per-job cost (~1 ms) stays small
MAX_KILLS = 2              # a job on which this many workers died is dropped
ATTEMPT_BASE = 5.0         # s a worker may take for a job before it counts as hung...
ATTEMPT_PER_LINE = 0.5     # ...plus this per line
BACKGROUND_DEADLINE = 60.0  # s a background job may wait for a worker
VNC_TIMEOUT = 3.0          # s for a reply from the VNC worker
DISCONNECT_GRACE = 0.5     # s: a socket-disconnect right after ready may be an older peer's
POISON_MEMORY = 1000       # line keys remembered as having killed workers
GLYPH_BACKLOG = 500        # lines learned by workers' glyph tables kept to pass on
GLYPH_RELAY_PER_JOB = 100  # of those, at most this many go with one job


class JobFailed(RuntimeError):
    """A job was dropped (deadline, killed workers, bad job); the message says which."""


# ---------------------------------------------------------------------------------------
# The worker pool (pure logic: sockets and clock are passed in, so tests can drive it)
# ---------------------------------------------------------------------------------------

@dataclass(eq=False)
class Job:
    header: dict                   # for the worker; job_id is set by the pool
    pixels: object                 # buffer sent after the header
    deadline: float                # monotonic: dropped if not finished by then
    priority: bool = False
    desktop: str | None = None
    boxes: list = field(default_factory=list)   # screen boxes of its lines (for promotion)
    future: asyncio.Future | None = None
    id: int = 0
    kills: int = 0                 # workers that died or hung while holding it
    worker: bytes | None = None
    attempt_deadline: float = 0.0
    submitted: float = 0.0


@dataclass(eq=False)
class Worker:
    ident: bytes
    transport: str                 # which job socket it came in on ("ipc" or "tcp")
    pid: int | None
    host: str
    expiry: float                  # silent past this: gone
    since: float
    fd: int | None = None
    job: Job | None = None
    jobs_done: int = 0
    glyph_cursor: int = 0          # GlyphRelay seq up to which it has been sent the others' lines

    @property
    def origin(self) -> bytes:
        """Who learned a relayed line: the process, which keeps its glyph table when its
        socket (and so its ident) is replaced."""
        return f"{self.host}:{self.pid}".encode() if self.pid is not None else self.ident


class GlyphRelay:
    """What one worker's glyph table learned (workers/ocr_glyphs.py), passed on to the
    other workers with their next jobs. Without it each worker learns only from the lines
    it happens to be given: a screen read a second time was spelled from the table on one
    worker and sent to Tesseract on the other, and two workers were slower than one.
    The records are opaque here; the receiving table checks them."""

    def __init__(self, backlog: int = GLYPH_BACKLOG, per_job: int = GLYPH_RELAY_PER_JOB):
        self.lines: collections.deque[tuple[int, bytes, object]] = collections.deque(maxlen=backlog)
        self.per_job = per_job
        self.seq = 0        # of the newest line
        self.relayed = 0

    def add(self, origin: bytes, records) -> None:
        for record in records if isinstance(records, list) else ():
            self.seq += 1
            self.lines.append((self.seq, origin, record))

    def take_for(self, origin: bytes, cursor: int) -> tuple[list, int]:
        """The lines after `cursor` learned by others than `origin` (at most per_job), and
        the cursor to give next time. A new worker (cursor 0) is sent the whole backlog,
        a job at a time."""
        if cursor >= self.seq or not self.lines:
            return [], self.seq
        start = max(cursor + 1 - self.lines[0][0], 0)
        out = []
        for seq, learned_by, record in itertools.islice(self.lines, start, None):
            cursor = seq
            if learned_by != origin:
                out.append(record)
                if len(out) >= self.per_job:
                    break
        self.relayed += len(out)
        return out, cursor


class WorkerPool:
    """LRU job dispatch over ready workers, with heartbeats, requeue and poison detection."""

    def __init__(self, send: Callable[[str, bytes, list], None], clock: Callable[[], float] = time.monotonic):
        self.send = send
        self.clock = clock
        self.workers: dict[bytes, Worker] = {}
        self.idle: collections.deque[bytes] = collections.deque()   # longest idle first
        self.urgent: collections.deque[Job] = collections.deque()
        self.background: collections.deque[Job] = collections.deque()
        self.running: dict[int, Job] = {}
        self.unavailable: str | None = None   # the last "OCR unavailable: ..." a worker sent
        self._ids = itertools.count(1)
        self.done = self.requeued = self.failed = self.expired = self.bad = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=1000)
        self._next_heartbeat = 0.0
        self.glyphs = GlyphRelay()
        self.on_ready: Callable[[], None] = lambda: None   # a worker became ready

    # -- jobs --------------------------------------------------------------------------
    def submit(self, job: Job) -> asyncio.Future:
        job.id = next(self._ids)
        job.header["job_id"] = job.id
        job.submitted = self.clock()
        if job.future is None:
            job.future = asyncio.get_running_loop().create_future()
        (self.urgent if job.priority else self.background).append(job)
        self.dispatch()
        return job.future

    def promote(self, wanted: Callable[[Job], bool]) -> int:
        """Move queued background jobs that a frontend now waits for to the front."""
        moved = [j for j in self.background if wanted(j)]
        for job in moved:
            self.background.remove(job)
            job.priority = True
            self.urgent.append(job)
        if moved:
            self.dispatch()
        return len(moved)

    def _finish(self, job: Job, result=None, error: str | None = None) -> None:
        self.running.pop(job.id, None)
        job.worker = None
        if job.future is not None and not job.future.done():
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(JobFailed(error))

    def _lost(self, job: Job, why: str) -> None:
        """The worker holding `job` died or hung: queue it again, or drop it."""
        self.running.pop(job.id, None)
        job.worker = None
        job.kills += 1
        if job.kills >= MAX_KILLS:
            self.failed += 1
            log.warning("job %d dropped: %d OCR workers died or hung on it (%s)", job.id, job.kills, why)
            self._finish(job, error=f"OCR job dropped: {job.kills} OCR workers died or hung on it")
        else:
            self.requeued += 1
            log.info("job %d queued again: %s", job.id, why)
            (self.urgent if job.priority else self.background).appendleft(job)

    def dispatch(self) -> None:
        now = self.clock()
        while self.idle and (self.urgent or self.background):
            job = (self.urgent or self.background).popleft()
            if job.future is not None and job.future.done():
                continue  # its caller gave up
            if now > job.deadline:
                self.expired += 1
                self._finish(job, error="OCR job expired before a worker was free")
                continue
            worker = self.workers[self.idle.popleft()]
            worker.job, job.worker = job, worker.ident
            job.attempt_deadline = now + ATTEMPT_BASE + ATTEMPT_PER_LINE * len(job.header.get("lines", ()))
            self.running[job.id] = job
            relay, worker.glyph_cursor = self.glyphs.take_for(worker.origin, worker.glyph_cursor)
            header = {**job.header, "glyphs_upto": worker.glyph_cursor}
            if relay:
                header["glyphs"] = relay
            self.send(worker.transport, worker.ident, [wire.W_JOB, wire.pack(header), job.pixels])

    # -- workers -----------------------------------------------------------------------
    def on_message(self, transport: str, ident: bytes, verb: bytes, body: dict, fd: int | None = None) -> None:
        now = self.clock()
        worker = self.workers.get(ident)
        if verb == wire.W_READY:
            if worker is not None and worker.job is not None:
                self._lost(worker.job, "its worker started over")
            if fd is not None:  # that file descriptor now belongs to this peer
                for other in [w for w in self.workers.values() if w.fd == fd and w.ident != ident]:
                    self.forget(other.ident, "its connection was replaced")
            self.workers[ident] = Worker(ident, transport, body.get("pid"), str(body.get("host", "")),
                                         now + wire.WORKER_HEARTBEAT * wire.WORKER_LIVENESS, now, fd)
            # A worker that says ready again (after a reset) must not count the same
            # relayed lines twice: it says how far it got.
            upto = body.get("glyphs_upto")
            if isinstance(upto, int):
                self.workers[ident].glyph_cursor = min(max(upto, 0), self.glyphs.seq)
            self._set_idle(ident)
            self.unavailable = None
            log.info("OCR worker %s ready", ident.decode(errors="replace"))
            self.dispatch()
            self.on_ready()
            return
        if verb == wire.W_UNAVAILABLE:
            self.unavailable = str(body.get("error") or "OCR unavailable")
            if worker is not None:
                self.forget(ident, self.unavailable)
            log.error("OCR worker %s: %s", ident.decode(errors="replace"), self.unavailable)
            return
        if verb in (wire.W_RESULT, wire.W_ERROR):
            job = self.running.get(body.get("job_id"))
            if job is None:
                # A late answer for a job that was requeued and finished elsewhere, or
                # cancelled: if it is still waiting in a queue, take it.
                job = next((j for j in itertools.chain(self.urgent, self.background) if j.id == body.get("job_id")),
                           None)
                if job is not None:
                    (self.urgent if job in self.urgent else self.background).remove(job)
            if job is not None:
                if verb == wire.W_RESULT:
                    self.done += 1
                    self.latencies.append(now - job.submitted)
                    self._finish(job, result=body.get("lines"))
                else:
                    self.bad += 1
                    self._finish(job, error=f"OCR job failed: {body.get('error')}")
            if worker is None:
                self.send(transport, ident, [wire.W_RESET, wire.pack({})])
                return
            if verb == wire.W_RESULT:
                self.glyphs.add(worker.origin, body.get("glyphs"))
            if worker.job is not None and worker.job.id == body.get("job_id"):
                worker.job = None
                worker.jobs_done += 1
            worker.expiry = now + wire.WORKER_HEARTBEAT * wire.WORKER_LIVENESS
            if worker.job is None:
                self._set_idle(ident)
            self.dispatch()
            return
        if verb == wire.W_HEARTBEAT:
            if worker is None:
                self.send(transport, ident, [wire.W_RESET, wire.pack({})])
            else:
                worker.expiry = now + wire.WORKER_HEARTBEAT * wire.WORKER_LIVENESS
            return
        log.warning("unknown message %r from OCR worker %s", verb, ident)

    def _set_idle(self, ident: bytes) -> None:
        if ident not in self.idle:
            self.idle.append(ident)

    def forget(self, ident: bytes, why: str) -> None:
        worker = self.workers.pop(ident, None)
        if worker is None:
            return
        if ident in self.idle:
            self.idle.remove(ident)
        log.warning("OCR worker %s gone: %s", ident.decode(errors="replace"), why)
        if worker.job is not None:
            job, worker.job = worker.job, None
            self._lost(job, f"worker {ident.decode(errors='replace')} {why}")
        self.dispatch()

    def on_disconnect(self, fd: int) -> None:
        """The socket monitor saw a peer's connection close: a dead worker, at once."""
        now = self.clock()
        for worker in [w for w in self.workers.values() if w.fd == fd]:
            # The kernel reuses descriptors: a worker that said ready just now on this
            # fd is a new peer, and the event was the old one's.
            if now - worker.since > DISCONNECT_GRACE:
                self.forget(worker.ident, "disconnected")

    def tick(self) -> None:
        """Heartbeats out; silent workers, hung jobs and expired queued jobs dropped."""
        now = self.clock()
        for worker in list(self.workers.values()):
            if now > worker.expiry:
                self.forget(worker.ident, "silent")
            elif worker.job is not None and now > worker.job.attempt_deadline:
                # It still heartbeats but its recognition never returns: the supervisor kills
                # such a process (busy_since); the job goes elsewhere now.
                self.forget(worker.ident, f"hung on job {worker.job.id}")
        for queue in (self.urgent, self.background):
            for job in [j for j in queue if now > j.deadline or (j.future is not None and j.future.done())]:
                queue.remove(job)
                if not job.future.done():
                    self.expired += 1
                    self._finish(job, error="OCR job expired before a worker was free")
        for job in [j for j in self.running.values() if now > j.deadline]:
            self.expired += 1
            self._finish(job, error="OCR job missed its deadline")
        if now >= self._next_heartbeat:
            for worker in self.workers.values():
                self.send(worker.transport, worker.ident, [wire.W_HEARTBEAT, wire.pack({})])
            self._next_heartbeat = now + wire.WORKER_HEARTBEAT
        self.dispatch()

    def stats(self) -> dict:
        lat = sorted(self.latencies)
        pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1)) if lat else (lambda q: None)
        now = self.clock()
        return {
            "queue": len(self.urgent) + len(self.background), "queue_urgent": len(self.urgent),
            "inflight": len(self.running),
            "workers": [{"id": w.ident.decode(errors="replace"), "pid": w.pid, "host": w.host,
                         "busy": w.job.id if w.job else None, "jobs": w.jobs_done,
                         "up_s": round(now - w.since, 1)} for w in self.workers.values()],
            "latency_ms": {"p50": pct(0.5), "p95": pct(0.95)},
            "jobs": {"done": self.done, "requeued": self.requeued, "failed": self.failed,
                     "expired": self.expired, "bad": self.bad},
            "glyph_lines": {"learned": self.glyphs.seq, "relayed": self.glyphs.relayed},
        }


# ---------------------------------------------------------------------------------------
# Which lines to read again after a change (pure)
# ---------------------------------------------------------------------------------------

def plan_reads(old: list[Box], changed: list[Box], find_lines: Callable[[Box], list[Box]],
               size: tuple[int, int]) -> tuple[set[Box], set[Box]]:
    """After the pixels in `changed` moved: which stored lines go, which found lines come.

    A typed character changes a few pixels at the end of a line, yet the whole line must
    be read again; a deleted word leaves a shorter line that no longer touches the change.
    So the set grows to a fixed point: stored lines touching the change go, lines found
    touching the change or a line that went come, and lines that came push out the stored
    lines they touch. Lines are looked for in windows around the change, grown until every
    line we keep lies whole inside one (a line cut by a window's edge is not trusted).
    """
    w, h = size
    seed = list(changed) + [o for o in old if any(intersects(o, c) for c in changed)]
    windows = merge_boxes([expand(b, WINDOW_MARGIN_X, WINDOW_MARGIN_Y, w, h) for b in seed])
    removed: set[Box] = set()
    added: set[Box] = set()
    for _attempt in range(6):
        found: list[tuple[Box, Box]] = []   # (line, the window it was found in)
        for win in windows:
            found.extend((line, win) for line in find_lines(win))
        core = list(changed)
        removed, added = set(), set()
        grew = True
        while grew:
            grew = False
            for o in old:
                if o not in removed and any(intersects(o, c) for c in core):
                    removed.add(o)
                    core.append(o)
                    grew = True
            for line, _win in found:
                if line not in added and any(intersects(line, c) for c in core):
                    added.add(line)
                    core.append(line)
                    grew = True
        cut = [line for line, win in found if line in added and not _whole_inside(line, win, w, h)]
        outside = [o for o in removed if not any(_contains(win, o) for win in windows)]
        if not cut and not outside:
            break
        windows = merge_boxes(windows + [expand(b, WINDOW_MARGIN_X, WINDOW_MARGIN_Y, w, h) for b in cut + outside])
    return removed, added


def _contains(outer: Box, inner: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _whole_inside(line: Box, win: Box, w: int, h: int) -> bool:
    """Not touching an edge of the window that is not also an edge of the screen."""
    return ((line[0] > win[0] + 1 or win[0] == 0) and (line[1] > win[1] + 1 or win[1] == 0)
            and (line[2] < win[2] - 1 or win[2] == w) and (line[3] < win[3] - 1 or win[3] == h))


def changed_boxes(old: np.ndarray, new: np.ndarray, x: int, y: int, row_gap: int = 8) -> list[Box]:
    """Tight boxes (screen coordinates) around the pixels that differ between two crops of
    the same place: one per run of changed rows, so that two changes far apart stay two."""
    diff = old != new
    rows = np.flatnonzero(diff.any(axis=1))
    if rows.size == 0:
        return []
    boxes = []
    start = prev = int(rows[0])
    for r in itertools.chain(rows[1:].tolist(), [None]):
        if r is not None and r - prev <= row_gap:
            prev = r
            continue
        cols = np.flatnonzero(diff[start:prev + 1].any(axis=0))
        boxes.append((x + int(cols[0]), y + start, x + int(cols[-1]) + 1, y + prev + 1))
        if r is not None:
            start = prev = r
    return boxes


# ---------------------------------------------------------------------------------------
# The store of one desktop
# ---------------------------------------------------------------------------------------

def make_line(box: Box, words: list[dict], seq: int) -> dict:
    confs = [w["conf"] for w in words]
    return {"text": " ".join(w["text"] for w in words), "box": list(box),
            "conf": round(sum(confs) / len(confs), 1) if confs else 0.0, "words": words, "seq": seq}


class OcrStore:
    def __init__(self, desktop: str):
        self.desktop = desktop
        self.lines: dict[Box, dict] = {}
        self.keys: dict[Box, bytes] = {}     # line pixels' hash: an unchanged re-read is no change
        self.epoch = None
        self.seq = -1
        self.rev = 0
        self.w = self.h = 0

    def sorted_lines(self, region: Box | None = None) -> list[dict]:
        lines = [ln for box, ln in self.lines.items() if region is None or intersects(box, region)]
        return sorted(lines, key=lambda ln: (ln["box"][1], ln["box"][0]))

    def snapshot(self, region: Box | None = None) -> dict:
        return {"desktop": self.desktop, "epoch": self.epoch, "seq": self.seq, "rev": self.rev,
                "w": self.w, "h": self.h, "lines": self.sorted_lines(region)}

    def apply(self, removed: list[Box], added: list[tuple[Box, bytes, dict]], epoch, seq: int,
              reset: bool = False) -> dict:
        """Change the store; return the update message (rev already advanced)."""
        if reset:
            self.lines.clear()
            self.keys.clear()
        for box in removed:
            self.lines.pop(box, None)
            self.keys.pop(box, None)
        for box, key, line in added:
            self.lines[box] = line
            self.keys[box] = key
        self.epoch, self.seq = epoch, max(seq, self.seq) if not reset else seq
        self.rev += 1
        return {"desktop": self.desktop, "rev": self.rev, "epoch": self.epoch, "seq": self.seq,
                "reset": reset, "removed": [list(b) for b in removed], "added": [ln for _, _, ln in added]}


# ---------------------------------------------------------------------------------------
# One desktop: damage -> mirror -> lines -> store
# ---------------------------------------------------------------------------------------

@dataclass(eq=False)
class Waiter:
    epoch: object
    seq: int
    region: Box | None
    future: asyncio.Future


class DesktopReader:
    def __init__(self, broker: "Broker", name: str):
        self.broker = broker
        self.name = name
        self.pub_endpoint, self.ctl_endpoint = wire.vnc_endpoints(broker.cfg.runtime_dir, name)
        self.vnc = wire.Requester(broker.ctx, self.ctl_endpoint)
        self.vnc_lock = asyncio.Lock()   # a Requester carries one request at a time
        self.store = OcrStore(name)
        self.mirror: np.ndarray | None = None
        self.epoch = None                # of the mirror
        self.connected = False
        self.error: str | None = None
        self.stream_epoch = None         # the damage stream's session...
        self.last_seq = -1               # ...and the last seq heard or covered by a snapshot
        self.pending: list[tuple[int, list]] = []   # (seq, rect [x, y, w, h])
        self.pending_seq = -1
        self.full = True                 # next pass reads the whole frame
        self.first_damage: float | None = None
        self.last_damage = 0.0
        self.damage_t: float | None = None   # the VNC worker's time of the oldest pending damage
        self.wake = asyncio.Event()
        self.wake.set()
        self.waiters: list[Waiter] = []
        self.retry: list[Box] = []       # lines that could not be read: try again later...
        self.forced: list[Box] = []      # ...by treating them as changed in the next pass
        self.passes = self.unchanged = 0
        self.pass_ms: collections.deque[float] = collections.deque(maxlen=500)
        self.damage_to_store_ms: collections.deque[float] = collections.deque(maxlen=500)
        self.unchanged_ms: collections.deque[float] = collections.deque(maxlen=500)

    # -- requests to the VNC worker -------------------------------------------------------
    async def vnc_request(self, verb: bytes, body: dict | None = None) -> tuple[dict, list]:
        async with self.vnc_lock:
            try:
                return await self.vnc.request(verb, body, timeout=VNC_TIMEOUT)
            except wire.WireError as e:
                if "no reply" in str(e):
                    raise wire.WireError(f"the VNC worker of desktop {self.name} does not answer") from None
                raise

    # -- damage subscription -------------------------------------------------------------
    async def listen(self) -> None:
        sub = self.broker.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 10000)
        for topic in (wire.TOPIC_DAMAGE, wire.TOPIC_STATE):
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        sub.connect(self.pub_endpoint)
        try:
            while True:
                topic, body = await sub.recv_multipart()
                header = wire.unpack(body)
                if topic == wire.TOPIC_DAMAGE:
                    self._on_damage(header)
                elif topic == wire.TOPIC_STATE:
                    self._on_state(header)
        finally:
            sub.close()

    def _on_damage(self, header: dict) -> None:
        now = time.monotonic()
        if header["epoch"] != self.stream_epoch:      # a new RFB session: read it all
            self.stream_epoch = header["epoch"]
            self.full = True
            self.pending.clear()
        elif header["seq"] <= self.last_seq:         # inside a snapshot we took already
            return
        elif header["seq"] != self.last_seq + 1 or header.get("resized"):
            self.full = True                         # a lost message or a new size
        self.last_seq = header["seq"]
        self.connected = True
        self.pending.extend((header["seq"], r) for r in header["rects"])
        self.pending_seq = header["seq"]
        if self.first_damage is None:
            self.first_damage = now
            self.damage_t = header.get("t")
        self.last_damage = now
        self.wake.set()

    def _on_state(self, header: dict) -> None:
        was = self.connected
        self.connected = bool(header.get("connected"))
        if self.connected:
            self.error = None
            if header.get("epoch") != self.epoch or self.mirror is None:
                self.full = True
                self.wake.set()
        else:
            self.error = f"desktop {self.name} is disconnected" + (f" ({header['error']})" if header.get("error") else "")
            if was:
                self._fail_waiters(self.error)

    # -- passes --------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            await self.wake.wait()
            # Debounce: let a burst of damage (one redraw in several updates) settle, unless
            # a frontend is waiting for this desktop.
            while not self.waiters and not self.full and self.first_damage is not None:
                now = time.monotonic()
                quiet_left = self.last_damage + DEBOUNCE_QUIET - now
                max_left = self.first_damage + DEBOUNCE_MAX - now
                if quiet_left <= 0 or max_left <= 0:
                    break
                await asyncio.sleep(min(quiet_left, max_left))
            self.wake.clear()
            if self.retry and self.broker.pool.idle:
                # Unchanged pixels that could not be read before: read them as if changed.
                self.forced, self.retry = self.forced + self.retry, []
            try:
                await self.one_pass()
            except wire.WireError as e:
                self.error = str(e)
                self._fail_waiters(str(e))
                self.full = True
                await asyncio.sleep(0.5)   # the VNC worker is away; its state message wakes us
            except Exception:  # a bug must not stop the desktop's OCR for good
                log.exception("OCR pass on desktop %s failed", self.name)
                self.full = True
                await asyncio.sleep(1.0)
                self.wake.set()

    async def one_pass(self) -> None:
        started = time.monotonic()
        damage_t, self.damage_t = self.damage_t, None
        self.first_damage = None
        if self.full:
            await self._full_pass()
        elif self.pending or self.forced:
            await self._incremental_pass()
        else:
            return
        elapsed = time.monotonic() - started
        self.passes += 1
        self.pass_ms.append(elapsed * 1000)
        if damage_t is not None:
            self.damage_to_store_ms.append(max(time.time() - damage_t, 0.0) * 1000)

    async def _full_pass(self) -> None:
        self.full = False
        header, buffers = await self.vnc_request(b"snapshot")
        w, h, seq = header["w"], header["h"], header["seq"]
        rgbx = np.frombuffer(buffers[0], np.uint8).reshape(h, w, 4)
        gray = await asyncio.to_thread(ocr_engine.to_gray, rgbx)
        self.mirror, self.epoch = gray, header["epoch"]
        self.connected, self.error = True, None
        if header["epoch"] != self.stream_epoch:
            self.stream_epoch, self.last_seq, self.pending = header["epoch"], seq, []
        else:
            # Damage up to the snapshot's seq is in the snapshot already.
            self.last_seq = max(self.last_seq, seq)
            self.pending = [(s, r) for s, r in self.pending if s > seq]
        boxes = await asyncio.to_thread(ocr_engine.find_text_lines, gray)
        added, failures = await self._read(gray, [tuple(b) for b in boxes], seq)
        self.store.w, self.store.h = w, h
        update = self.store.apply(list(self.store.lines), added, header["epoch"], seq, reset=True)
        self._publish(update)
        self._settle_waiters(failures)

    async def _incremental_pass(self) -> None:
        started = time.monotonic()
        pending, self.pending = self.pending, []
        forced, self.forced = self.forced, []
        seq = max((s for s, _ in pending), default=self.store.seq)
        fb_h, fb_w = self.mirror.shape
        rects = [(x, y, x + w, y + h) for _, (x, y, w, h) in pending if w > 0 and h > 0]
        rects = [(max(a, 0), max(b, 0), min(c, fb_w), min(d, fb_h)) for a, b, c, d in rects]
        # Even a damaged whole screen is fetched and compared rather than read afresh: a
        # repaint with the same pixels then costs a crop and a comparison, nothing more.
        rects = merge_boxes([r for r in rects if r[0] < r[2] and r[1] < r[3]], gap=16)
        changed: list[Box] = list(forced)
        for x0, y0, x1, y1 in rects:
            header, buffers = await self.vnc_request(b"crop", {"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0})
            if header["epoch"] != self.epoch:   # the session changed under us
                self.full = True
                self.wake.set()
                return
            crop = ocr_engine.to_gray(np.frombuffer(buffers[0], np.uint8).reshape(y1 - y0, x1 - x0, 4))
            changed += changed_boxes(self.mirror[y0:y1, x0:x1], crop, x0, y0)
            self.mirror[y0:y1, x0:x1] = crop
        if not changed:
            self.unchanged += 1
            self.unchanged_ms.append((time.monotonic() - started) * 1000)
            self._publish(self.store.apply([], [], self.epoch, seq))
            self._settle_waiters([])
            return
        gray = self.mirror

        def find(win: Box) -> list[Box]:
            return [tuple(b) for b in ocr_engine.find_text_lines(gray, win)]
        removed, found = await asyncio.to_thread(plan_reads, list(self.store.lines), changed, find, (fb_w, fb_h))
        # A line read again with the same box and pixels is no change at all.
        same = {b for b in found if b in removed and self.store.keys.get(b) == ocr_engine.line_key(gray, b)}
        removed -= same
        found -= same
        added, failures = await self._read(gray, sorted(found, key=lambda b: (b[1], b[0])), seq)
        self._publish(self.store.apply(sorted(removed), added, self.epoch, seq))
        self._settle_waiters(failures)

    async def _read(self, gray: np.ndarray, boxes: list[Box], seq: int):
        priority = bool(self.waiters)
        results, failures = await self.broker.read_lines(gray, boxes, priority=priority, desktop=self.name,
                                                         deadline=time.monotonic() + BACKGROUND_DEADLINE)
        added = [(box, key, make_line(box, words, seq)) for box, (key, words) in results.items() if words]
        for box, why in failures:
            if not why.startswith("OCR job dropped"):
                self.retry.append(box)
        return added, failures

    def _publish(self, update: dict) -> None:
        self.broker.publish(update)

    # -- ocr_now waiters -------------------------------------------------------------------
    def is_current(self, epoch, seq: int) -> bool:
        return self.store.epoch == epoch and self.store.seq >= seq

    def answer(self, region: Box | None, stale: bool = False) -> dict:
        out = self.store.snapshot(region)
        out["stale"] = stale
        return out

    def _settle_waiters(self, failures: list[tuple[Box, str]]) -> None:
        for waiter in list(self.waiters):
            if waiter.future.done():
                self.waiters.remove(waiter)
            elif self.is_current(waiter.epoch, waiter.seq):
                self.waiters.remove(waiter)
                hurt = [why for box, why in failures if waiter.region is None or intersects(box, waiter.region)]
                if hurt:
                    waiter.future.set_exception(wire.WireError(hurt[0]))
                else:
                    waiter.future.set_result(self.answer(waiter.region))

    def _fail_waiters(self, message: str) -> None:
        for waiter in self.waiters:
            if not waiter.future.done():
                waiter.future.set_exception(wire.WireError(message))
        self.waiters.clear()

    async def ocr_now(self, region: Box | None, timeout: float, stale_ok: bool) -> dict:
        status, _ = await self.vnc_request(b"status")
        if not status.get("connected"):
            raise wire.WireError(f"desktop {self.name} is disconnected"
                                 + (f" ({status['error']})" if status.get("error") else ""))
        if self.is_current(status["epoch"], status["seq"]) and not self.full:
            return self.answer(region)
        waiter = Waiter(status["epoch"], status["seq"], region, asyncio.get_running_loop().create_future())
        self.waiters.append(waiter)
        # Queued jobs of this desktop that the caller needs go before background work.
        self.broker.pool.promote(lambda j: j.desktop == self.name and (
            region is None or any(intersects(b, region) for b in j.boxes)))
        self.wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except asyncio.TimeoutError:
            if stale_ok:
                return self.answer(region, stale=True)
            raise wire.WireError(f"OCR of desktop {self.name} not current within {timeout:g} s "
                                 f"(store at frame {self.store.seq}, screen at {status['seq']})") from None
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    def stats(self) -> dict:
        def p50(values):
            return round(statistics.median(values), 2) if values else None
        return {"epoch": self.store.epoch, "seq": self.store.seq, "rev": self.store.rev,
                "lines": len(self.store.lines), "passes": self.passes, "unchanged": self.unchanged,
                "connected": self.connected, "error": self.error,
                "pass_ms_p50": p50(self.pass_ms), "unchanged_ms_p50": p50(self.unchanged_ms),
                "damage_to_store_ms_p50": p50(self.damage_to_store_ms)}


# ---------------------------------------------------------------------------------------
# The broker process
# ---------------------------------------------------------------------------------------

class CurveKeys:
    """ZAP credentials provider: the client keys from `vncmcp keygen`, nothing else."""

    def __init__(self, allowed: set[bytes]):
        self.allowed = allowed
        self.accepted = self.denied = 0

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.allowed
        if ok:
            self.accepted += 1
        else:
            self.denied += 1
            log.warning("refused an OCR worker with an unknown CURVE key %s", key.decode(errors="replace"))
        return ok


class Broker:
    def __init__(self, cfg, ctx: zmq.asyncio.Context | None = None):
        self.cfg = cfg
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.runtime_dir = wire.ensure_runtime_dir(cfg.runtime_dir)
        self.jobs_endpoint, self.ctl_endpoint, self.pub_endpoint = wire.broker_endpoints(self.runtime_dir)
        self.pool = WorkerPool(self._send_to_worker)
        self.pool.on_ready = self._worker_ready
        self.cache = ocr_engine.LineCache()
        self.inflight: dict[bytes, asyncio.Future] = {}
        self.poisoned: collections.OrderedDict[bytes, str] = collections.OrderedDict()
        self.desktops = {name: DesktopReader(self, name) for name in cfg.desktops}
        self.job_sockets: dict[str, zmq.asyncio.Socket] = {}
        self.curve: CurveKeys | None = None
        self.test_hooks = os.environ.get(wire.TEST_HOOKS_ENV) == "1"
        self._stopping = asyncio.Event()

    # -- sockets ---------------------------------------------------------------------------
    def _send_to_worker(self, transport: str, ident: bytes, parts: list) -> None:
        wire.send_parts(self.job_sockets[transport], [ident] + parts)

    def _worker_ready(self) -> None:
        for desk in self.desktops.values():
            if desk.retry:
                desk.wake.set()

    def publish(self, update: dict) -> None:
        wire.send_parts(self.pub, [wire.TOPIC_OCR, wire.pack(update)])

    def _bind_tcp(self) -> None:
        """The remote workers' endpoint: only when configured, and only with CURVE."""
        from zmq.auth.asyncio import AsyncioAuthenticator

        from broker import keys
        listen = self.cfg.ocr_listen
        if not listen.startswith("tcp://"):
            raise ValueError(f"ocr_listen must be tcp://HOST:PORT, got {listen!r}")
        if not self.cfg.keys_dir:
            raise ValueError("ocr_listen needs keys_dir: TCP without CURVE keys is refused "
                             "(make them with `vncmcp keygen DIR`)")
        server = keys.server_keys(self.cfg.keys_dir)
        self.curve = CurveKeys(server.allowed)
        self.auth = AsyncioAuthenticator(self.ctx)
        self.auth.start()
        self.auth.configure_curve_callback(domain="*", credentials_provider=self.curve)
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_server = True
        sock.curve_publickey = server.public
        sock.curve_secretkey = server.secret
        sock.bind(listen)
        self.job_sockets["tcp"] = sock
        log.info("remote OCR workers: %s (CURVE, %d client key(s))", listen, len(server.allowed))

    def bind(self) -> None:
        for endpoint in (self.jobs_endpoint, self.ctl_endpoint, self.pub_endpoint):
            path = wire.ipc_path(endpoint)
            if path and os.path.exists(path):
                os.unlink(path)  # left by a broker that was killed
        jobs = self.ctx.socket(zmq.ROUTER)
        jobs.setsockopt(zmq.LINGER, 0)
        jobs.bind(self.jobs_endpoint)
        self.job_sockets["ipc"] = jobs
        if self.cfg.ocr_listen:
            self._bind_tcp()
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        self.ctl.bind(self.ctl_endpoint)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 10000)
        self.pub.bind(self.pub_endpoint)

    # -- worker messages -----------------------------------------------------------------
    async def _serve_jobs(self, transport: str) -> None:
        sock = self.job_sockets[transport]
        while True:
            parts = await sock.recv_multipart(copy=False)
            if len(parts) < 3:
                continue
            ident, verb = parts[0].bytes, parts[1].bytes
            try:
                body = wire.unpack(parts[2].bytes)
            except Exception:
                log.warning("unreadable message from OCR worker %r", ident)
                continue
            fd = None
            if verb == wire.W_READY:
                try:
                    fd = parts[1].get(zmq.SRCFD)
                except zmq.ZMQError:
                    fd = None
            self.pool.on_message(transport, ident, verb, body if isinstance(body, dict) else {}, fd)

    async def _watch_disconnects(self, transport: str) -> None:
        """Hear at once when a worker's connection drops (kill -9), not after its heartbeats."""
        from zmq.utils.monitor import parse_monitor_message
        monitor = self.job_sockets[transport].get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                if event["event"] == zmq.EVENT_DISCONNECTED:
                    self.pool.on_disconnect(int(event["value"]))
        finally:
            monitor.close()

    async def _tick(self) -> None:
        while True:
            self.pool.tick()
            await asyncio.sleep(wire.WORKER_HEARTBEAT / 4)

    # -- reading lines through the cache and the pool ------------------------------------
    async def read_lines(self, gray: np.ndarray, boxes: list[Box], *, priority: bool, deadline: float,
                         desktop: str | None = None, use_cache: bool = True, test: dict | None = None):
        """Words of each line box: from the line cache, or read by the workers.

        Returns ({box: (key, [word dicts in screen coordinates])}, [(box, why failed)]).
        Lines with the same pixels are read once, also across concurrent calls.
        """
        loop = asyncio.get_running_loop()
        results: dict[Box, tuple[bytes, list]] = {}
        failures: list[tuple[Box, str]] = []
        waits: list[tuple[Box, bytes, asyncio.Future]] = []
        to_read: dict[bytes, list[Box]] = {}
        created: dict[bytes, asyncio.Future] = {}
        for box in boxes:
            key = ocr_engine.line_key(gray, box)
            if use_cache:
                cached = self.cache.get(key, box)
                if cached is not None:
                    results[box] = (key, [_word_dict(w) for w in cached])
                    continue
                if key in self.poisoned:
                    failures.append((box, self.poisoned[key]))
                    continue
                if key in self.inflight:
                    waits.append((box, key, self.inflight[key]))
                    continue
            if key in to_read:
                to_read[key].append(box)
                continue
            to_read[key] = [box]
            created[key] = loop.create_future()
            waits.append((box, key, created[key]))
            if use_cache:
                self.inflight[key] = created[key]
        firsts = sorted(((bs[0], key) for key, bs in to_read.items()), key=lambda t: (t[0][1], t[0][0]))
        for group in _job_groups(firsts):
            self._submit(gray, group, priority, deadline, desktop, use_cache, test, created)
        for box, key, fut in waits:
            try:
                relative = await fut
            except JobFailed as e:
                failures.append((box, str(e)))
                for other in to_read.get(key, [])[1:]:
                    failures.append((other, str(e)))
                continue
            for b in [box] + to_read.get(key, [])[1:]:
                results[b] = (key, [{"text": t, "box": [b[0] + r[0], b[1] + r[1], b[0] + r[2], b[1] + r[3]],
                                     "conf": c} for t, r, c in relative])
        return results, failures

    def _submit(self, gray, group, priority, deadline, desktop, use_cache, test, key_futures) -> None:
        h, w = gray.shape
        m = ocr_engine.MARGIN
        x0 = max(min(b[0] for b, _ in group) - m, 0)
        y0 = max(min(b[1] for b, _ in group) - m, 0)
        x1 = min(max(b[2] for b, _ in group) + m, w)
        y1 = min(max(b[3] for b, _ in group) + m, h)
        # A copy: the mirror changes under a job that waits in the queue or is sent again.
        crop = gray[y0:y1, x0:x1].copy()
        header = {"lines": [[b[0] - x0, b[1] - y0, b[2] - x0, b[3] - y0] for b, _ in group],
                  "origin": [x0, y0], "lang": self.cfg.ocr_lang, "w": x1 - x0, "h": y1 - y0, "channels": 1}
        if test and self.test_hooks:
            header["test"] = test
        job = Job(header, crop, deadline, priority, desktop, [b for b, _ in group])
        future = self.pool.submit(job)

        def done(f: asyncio.Future) -> None:
            error = None
            if f.cancelled():
                error = "OCR job cancelled"
            elif f.exception() is not None:
                error = str(f.exception())
            elif not isinstance(f.result(), list) or len(f.result()) != len(group):
                error = "OCR job failed: the worker answered for the wrong number of lines"
            for i, (box, key) in enumerate(group):
                kf = key_futures[key]
                if use_cache:
                    self.inflight.pop(key, None)
                if kf.done():
                    continue
                if error is not None:
                    if error.startswith("OCR job dropped"):   # never try those pixels again
                        self.poisoned[key] = error
                        while len(self.poisoned) > POISON_MEMORY:
                            self.poisoned.popitem(last=False)
                    kf.set_exception(JobFailed(error))
                else:
                    words = f.result()[i]
                    relative = [(wd["text"], (wd["box"][0] - box[0], wd["box"][1] - box[1],
                                              wd["box"][2] - box[0], wd["box"][3] - box[1]), wd["conf"])
                                for wd in words]
                    if use_cache:
                        self.cache.put(key, box, [ocr_engine.Word(t, (box[0] + r[0], box[1] + r[1], box[0] + r[2],
                                                                      box[1] + r[3]), c) for t, r, c in relative])
                    kf.set_result(relative)
        future.add_done_callback(done)

    # -- control requests ------------------------------------------------------------------
    async def _serve_ctl(self) -> None:
        while True:
            parts = await self.ctl.recv_multipart(copy=False)
            asyncio.create_task(self._answer(parts))

    async def _answer(self, parts) -> None:
        # [identity, b"", verb, body, buffers...] from a wire.Requester (DEALER); the
        # envelope runs to the first empty frame, and a request's buffers follow its body.
        split = next((i for i in range(1, len(parts)) if len(parts[i]) == 0), 0)
        envelope = [p.bytes for p in parts[:split + 1]]
        verb = parts[split + 1].bytes if len(parts) > split + 1 else b""
        try:
            body = wire.unpack(parts[split + 2].bytes) if len(parts) > split + 2 else {}
            buffers = [p.buffer for p in parts[split + 3:]]
            reply = wire.ok_parts(await self._handle(verb, body, buffers))
        except wire.WireError as e:
            reply = wire.err_parts(str(e))
        except (ValueError, KeyError, TypeError) as e:
            reply = wire.err_parts(f"bad {verb.decode(errors='replace')} request: {e}")
        except Exception as e:
            log.exception("ctl %r failed", verb)
            reply = wire.err_parts(f"OCR broker error: {e}")
        wire.send_parts(self.ctl, envelope + reply)

    def _desktop(self, body: dict) -> DesktopReader:
        name = body.get("desktop") or next(iter(self.desktops))
        if name not in self.desktops:
            raise wire.WireError(f"no desktop named {name!r}; configured: {', '.join(self.desktops)}")
        return self.desktops[name]

    def _check_available(self) -> None:
        if not self.pool.workers and self.pool.unavailable:
            raise wire.WireError(self.pool.unavailable)

    async def _handle(self, verb: bytes, body: dict, buffers: list) -> dict:
        if verb == b"status":
            return self.status()
        if verb == b"ocr_snapshot":
            return self._desktop(body).store.snapshot()
        if verb == b"ocr_now":
            desk = self._desktop(body)
            self._check_available()
            region = _region(body.get("region"))
            return await desk.ocr_now(region, float(body.get("timeout_ms", 5000)) / 1000,
                                      bool(body.get("stale_ok")))
        if verb == b"ocr_image":
            self._check_available()
            return await self.ocr_image(body, buffers)
        raise ValueError(f"unknown verb {verb!r}")

    async def ocr_image(self, body: dict, buffers: list) -> dict:
        w, h, channels = int(body["w"]), int(body["h"]), int(body.get("channels", 1))
        if channels not in (1, 4) or not buffers or memoryview(buffers[0]).nbytes != w * h * channels:
            raise ValueError(f"expected one {w}x{h}x{channels} pixel buffer (channels 1 or 4)")
        data = np.frombuffer(buffers[0], np.uint8)
        gray = data.reshape(h, w) if channels == 1 else await asyncio.to_thread(
            ocr_engine.to_gray, data.reshape(h, w, channels))
        started = time.monotonic()
        timeout = float(body.get("timeout_ms", 30000)) / 1000
        boxes = [tuple(b) for b in await asyncio.to_thread(ocr_engine.find_text_lines, gray)]
        results, failures = await self.read_lines(gray, boxes, priority=True, deadline=started + timeout,
                                                  use_cache=bool(body.get("cache", True)), test=body.get("test"))
        if failures and not results:
            raise wire.WireError(failures[0][1])
        lines = [make_line(b, results[b][1], 0) for b in boxes if b in results and results[b][1]]
        return {"lines": lines, "ms": round((time.monotonic() - started) * 1000, 1), "line_count": len(boxes),
                "failed": [{"box": list(b), "error": why} for b, why in failures]}

    def status(self) -> dict:
        out = self.pool.stats()
        out["cache"] = {"hits": self.cache.hits, "misses": self.cache.misses, "entries": len(self.cache._entries)}
        out["desktops"] = {name: d.stats() for name, d in self.desktops.items()}
        out["pid"] = os.getpid()
        if self.curve is not None:
            out["curve"] = {"accepted": self.curve.accepted, "denied": self.curve.denied}
        if not self.pool.workers and self.pool.unavailable:
            out["error"] = self.pool.unavailable
        return out

    def _heartbeat_stats(self) -> dict:
        s = self.status()
        s["workers"] = len(s["workers"])
        return s

    # -- lifetime ------------------------------------------------------------------------
    async def run(self) -> None:
        if not self.job_sockets:
            self.bind()
        tasks = [asyncio.create_task(c) for c in [self._serve_ctl(), self._tick()]
                 + [self._serve_jobs(t) for t in self.job_sockets] + [self._watch_disconnects(t) for t in self.job_sockets]
                 + [d.listen() for d in self.desktops.values()] + [d.run() for d in self.desktops.values()]]
        beat = Heartbeat(self.runtime_dir, self._heartbeat_stats)
        tasks.append(asyncio.create_task(beat.run_async()))
        log.info("OCR broker on %s", self.jobs_endpoint)
        try:
            await self._stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            beat.close()
            for d in self.desktops.values():
                d.vnc.close()
            if self.curve is not None:
                self.auth.stop()
            for sock in list(self.job_sockets.values()) + [self.ctl, self.pub]:
                sock.close()
            for endpoint in (self.jobs_endpoint, self.ctl_endpoint, self.pub_endpoint):
                try:
                    os.unlink(wire.ipc_path(endpoint))
                except FileNotFoundError:
                    pass

    def stop(self) -> None:
        self._stopping.set()


def _word_dict(w: ocr_engine.Word) -> dict:
    return {"text": w.text, "box": list(w.box), "conf": round(w.conf, 1)}


def _region(value) -> Box | None:
    if value is None:
        return None
    x0, y0, x1, y1 = (int(v) for v in value)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"region {list(value)} is empty (want [x0, y0, x1, y1])")
    return (x0, y0, x1, y1)


def _job_groups(items: list[tuple[Box, bytes]]):
    """Lines in reading order cut into jobs of bounded size."""
    group, width = [], 0
    for box, key in items:
        line_width = box[2] - box[0]
        if group and (len(group) >= JOB_MAX_LINES or width + line_width > JOB_MAX_WIDTH):
            yield group
            group, width = [], 0
        group.append((box, key))
        width += line_width
    if group:
        yield group


def main(cfg, args) -> int:
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s broker[%(process)d] %(levelname)s %(message)s")
    # find_text_lines loads scipy.ndimage when first called (the OCR workers, which never
    # call it, need not pay for it). Loaded here, it does not add 0.2-0.6 s to the first
    # frame the broker reads (measured: 0.53 s instead of 0.30 s for synth_ui).
    import scipy.ndimage  # noqa: F401

    async def amain() -> int:
        broker = Broker(cfg)
        try:
            broker.bind()
        except (ValueError, zmq.ZMQError) as e:   # ocr_listen without keys, bad keys, port taken
            print(f"vncmcp broker: {e}", file=sys.stderr)
            return 2
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, broker.stop)
        await broker.run()
        return 0
    return asyncio.run(amain())
