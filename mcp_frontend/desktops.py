"""The frontend's state: one DesktopLink per configured desktop, held by a Frontend.

A DesktopLink joins what the tools need for one desktop: the frame mirror (mirror.py), a
control connection to its VNC worker for input and the clipboard, the text source
(ocr.py), and what this client has been shown (the numbered marks of the last marks
screenshot, the version it last looked at, buttons it holds down). Input goes through
`act`, which sends the actions and then waits for the screen to settle and describes
what changed. Nothing here knows about MCP: problems are raised as FrontendError with a
message meant for the tool result, and tools.py turns them into tool errors.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import zmq.asyncio

from broker import wire
from mcp_frontend import images
from mcp_frontend.mirror import FrameMirror, Rect, merge_rects
from mcp_frontend.ocr import OcrUnavailable, default_source
from mcp_frontend.text import Line, lines_touching

# After input: wait up to FIRST_CHANGE for the screen to react at all, then until it has
# been quiet for QUIET, never longer than SETTLE_LIMIT in all (a clock or a blinking
# cursor never goes quiet). A fixed sleep either wastes time or misses slow reactions.
FIRST_CHANGE = 0.5
QUIET = 0.15
SETTLE_LIMIT = 1.5
FEEDBACK_OCR_TIMEOUT = 1.5
FEEDBACK_LINES = 20
INPUT_CHUNK = 400            # actions per input request: long typing goes in several
STARTUP_GRACE = 10.0         # s after start in which a tool waits for a first frame still on its way
REQUEST_TIMEOUT = 5.0        # a worker that does not answer in time is gone (it restarts)


class FrontendError(Exception):
    """A problem to report to the caller as a tool error (bad argument, no desktop...)."""


@dataclass
class Feedback:
    """What an input action did to the screen."""
    version: int
    changed: bool
    settled: bool
    elapsed_ms: int
    regions: list[Rect] = field(default_factory=list)
    lines: list[Line] | None = None   # text now in the changed regions (None: not read)
    text_note: str | None = None       # why there is no text, or why it may be behind
    notes: list[str] = field(default_factory=list)
    complete: bool = True              # false: the change history did not reach back far enough


class DesktopLink:
    def __init__(self, name: str, ctx: zmq.asyncio.Context, runtime_dir: str, text_source):
        self.name = name
        self.mirror = FrameMirror(ctx, runtime_dir, name)
        self._control = wire.Requester(ctx, self.mirror.ctl_endpoint)
        self._control_lock = asyncio.Lock()   # a Requester carries one request at a time
        self.input_lock = asyncio.Lock()      # one input-and-settle at a time per desktop
        self.text = text_source
        self.marks: dict[int, images.Mark] = {}
        self.marks_version: int | None = None
        self.looked = 0                       # the version this client last saw
        self.buttons = 0                      # mouse buttons held down by mouse_down
        self.pointer: tuple[int, int] | None = None  # where we last put the pointer
        self.shot_cache: tuple | None = None  # (key, Rendered, ImageContent) of the last screenshot

    async def start(self) -> None:
        self.started = time.monotonic()
        await self.mirror.start()

    async def first_frame(self) -> None:
        """Right after start (an embedded service just came up) the first frame may still be
        on its way: wait for it a little rather than answer "no frame". Later, a missing
        frame is a real problem, reported at once."""
        mirror = self.mirror
        deadline = self.started + STARTUP_GRACE
        if mirror.frame is not None or time.monotonic() >= deadline:
            return
        if mirror.state.heard is None:
            # Not a word from the worker yet: the first snapshot request will tell whether
            # there is one (it answers, or the request times out).
            try:
                await asyncio.wait_for(mirror.first_attempt.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                return
        if mirror.frame is None and mirror.state.connected:   # a frame is coming
            await mirror.wait_first_frame(max(deadline - time.monotonic(), 0))

    async def close(self) -> None:
        await self.mirror.close()
        self._control.close()

    # -- checks ---------------------------------------------------------------------------
    def require_frame(self) -> None:
        """A frame to answer from (possibly stale), else the reason there is none."""
        if self.mirror.frame is None:
            raise FrontendError(self.mirror.problem or f"desktop {self.name}: no frame yet")

    def require_live(self) -> None:
        """A connected desktop, for anything that sends input or needs the current screen."""
        problem = self.mirror.problem
        if problem:
            raise FrontendError(problem)

    def check_point(self, x: int, y: int, what: str = "") -> None:
        self.require_frame()
        w, h = self.mirror.size
        if not (0 <= x < w and 0 <= y < h):
            label = f"{what} " if what else ""
            raise FrontendError(f"{label}point ({x}, {y}) is outside the {w}x{h} desktop: "
                                f"x must be 0-{w - 1} and y 0-{h - 1}")

    def check_region(self, region: Rect) -> Rect:
        """The region, which must lie within the desktop (x, y, width, height)."""
        self.require_frame()
        x, y, rw, rh = region
        w, h = self.mirror.size
        if rw <= 0 or rh <= 0:
            raise FrontendError(f"region {rw}x{rh} is empty: width and height must be at least 1")
        if x < 0 or y < 0 or x + rw > w or y + rh > h:
            raise FrontendError(f"region x={x} y={y} width={rw} height={rh} is not inside the {w}x{h} desktop: "
                                f"need x + width <= {w} and y + height <= {h}")
        return region

    # -- control requests -------------------------------------------------------------------
    async def request(self, verb: bytes, body: dict | None = None, timeout: float = REQUEST_TIMEOUT):
        async with self._control_lock:
            try:
                return await self._control.request(verb, body, timeout=timeout)
            except wire.WireError as e:
                raise FrontendError(str(e) if self.name in str(e) else f"desktop {self.name}: {e}") from None

    async def send(self, actions: list[dict], timeout: float = REQUEST_TIMEOUT) -> list[str]:
        """Send input actions in chunks; the worker's notes (e.g. clipboard losses) back."""
        notes = []
        for i in range(0, len(actions), INPUT_CHUNK):
            header, _ = await self.request(b"input", {"actions": actions[i:i + INPUT_CHUNK]}, timeout)
            notes += header.get("notes") or []
        for a in actions:  # remember where the pointer is, for status and mouse_down/up
            if "pointer" in a:
                self.pointer = tuple(a["pointer"])
        return notes

    # -- input with feedback ------------------------------------------------------------------
    async def act(self, actions: list[dict], timeout: float = REQUEST_TIMEOUT) -> Feedback:
        """Send `actions`, wait for the screen to settle, and say what changed."""
        self.require_live()
        async with self.input_lock:
            before = self.mirror.version
            started = time.monotonic()
            notes = await self.send(actions, timeout)
            changed = await self.mirror.wait_change(before, FIRST_CHANGE)
            settled = True
            if changed:
                settled = await self.mirror.wait_quiet(QUIET, max(SETTLE_LIMIT - (time.monotonic() - started), 0.05))
            feedback = await self.describe_changes(before)
            feedback.settled = settled
            feedback.elapsed_ms = round((time.monotonic() - started) * 1000)
            feedback.notes = notes + feedback.notes
            return feedback

    async def describe_changes(self, since: int) -> Feedback:
        """Regions changed after version `since`, and the text now in them."""
        mirror = self.mirror
        changes, complete = mirror.changes_since(since)
        version = mirror.version
        rects = [r for c in changes for r in c.rects]
        w, h = mirror.size
        notes = []
        if not complete:
            rects = [(0, 0, w, h)]
            notes.append(f"version {since} is older than the change history: everything counts as changed")
        regions = merge_rects(rects)
        feedback = Feedback(version=version, changed=bool(regions), settled=True, elapsed_ms=0,
                            regions=regions, notes=notes, complete=complete)
        self.looked = max(self.looked, version)
        if regions:
            try:
                reading = await self.text.read(self, None, timeout=FEEDBACK_OCR_TIMEOUT)
                boxes = [(x, y, x + rw, y + rh) for x, y, rw, rh in regions]
                feedback.lines = lines_touching(reading.lines, boxes)[:FEEDBACK_LINES]
                if reading.stale:
                    feedback.text_note = "the text may lag the screen: OCR had not caught up yet"
            except OcrUnavailable as e:
                feedback.text_note = str(e)
        return feedback

    # -- reading ---------------------------------------------------------------------------
    async def read_text(self, region: tuple[int, int, int, int] | None = None, timeout: float = 5.0):
        """The screen's text (region as x0, y0, x1, y1). Raises FrontendError."""
        self.require_frame()
        try:
            return await self.text.read(self, region, timeout=timeout)
        except OcrUnavailable as e:
            raise FrontendError(str(e)) from None


class Frontend:
    """Every configured desktop, their mirrors and text sources, for one MCP server."""

    def __init__(self, cfg, text_source=None, default_desktop: str | None = None,
                 ctx: zmq.asyncio.Context | None = None):
        self.cfg = cfg
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.asyncio.Context()
        self.text_source = text_source
        self.default = default_desktop or next(iter(cfg.desktops))
        if self.default not in cfg.desktops:
            raise FrontendError(self._unknown(self.default))
        self.links: dict[str, DesktopLink] = {}

    async def start(self) -> "Frontend":
        wire.ensure_runtime_dir(self.cfg.runtime_dir)
        if self.text_source is None:
            self.text_source = default_source(self.ctx, self.cfg.runtime_dir)
        for name in self.cfg.desktops:
            link = DesktopLink(name, self.ctx, self.cfg.runtime_dir, self.text_source)
            await link.start()
            self.links[name] = link
        return self

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()
        if self.text_source is not None:
            await self.text_source.close()
        if self._own_ctx:
            # destroy, not term: a socket some cancelled request left open must not hang exit
            self.ctx.destroy(linger=0)

    async def __aenter__(self) -> "Frontend":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _unknown(self, name: str) -> str:
        return f"unknown desktop {name!r}: configured desktops are {', '.join(self.cfg.desktops)}"

    def link(self, name: str | None) -> DesktopLink:
        if name is None or name == "":
            name = self.default
        if name not in self.links:
            raise FrontendError(self._unknown(name))
        return self.links[name]

    async def wait_ready(self, timeout: float) -> bool:
        """Until every desktop has a first frame (for tests and the benchmark)."""
        results = await asyncio.gather(*(l.mirror.wait_first_frame(timeout) for l in self.links.values()))
        return all(results)
