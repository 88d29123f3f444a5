"""The VNC worker: one persistent RFB session per desktop, published over ZeroMQ.

It owns the authoritative framebuffer. Every FrameUpdate becomes one PUB message (see
broker/wire.py for the format). Requests (snapshot, crop, input, status, clipboard) come on
a ROUTER socket. When the server goes away the state message says so, and the worker
reconnects with capped exponential backoff; each new session is a new epoch.
The password is never logged: log lines name host and port only.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import numpy as np
import zmq
import zmq.asyncio

from broker import wire
from broker.child import Heartbeat, die_with_parent
from workers.rfb import Bell, CutText, FrameUpdate, RFBError, RFBSession

log = logging.getLogger("vncmcp.vnc")

HEARTBEAT_INTERVAL = 1.0
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0
STABLE_SESSION = 10.0  # a session that lasted this long resets the backoff


class VncWorker:
    def __init__(self, desktop_cfg, runtime_dir: str, ctx: zmq.asyncio.Context | None = None):
        self.cfg = desktop_cfg
        self.runtime_dir = wire.ensure_runtime_dir(runtime_dir)
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.pub_endpoint, self.ctl_endpoint = wire.vnc_endpoints(runtime_dir, desktop_cfg.name)
        self.session: RFBSession | None = None
        self.epoch = 0
        self.seq = 0
        self.connected = False
        self.since = time.time()
        self.error: str | None = None
        self.clipboard = ""
        self.frames_published = 0
        self.bytes_published = 0
        self.connects = 0
        self._stopping = asyncio.Event()

    # -- state -------------------------------------------------------------------------
    def state(self) -> dict:
        info = self.session.info if (self.session and self.connected) else None
        return {
            "desktop": self.cfg.name, "epoch": self.epoch, "seq": self.seq,
            "connected": self.connected, "since": self.since, "error": self.error,
            "server": f"{self.cfg.host}:{self.cfg.port}",
            "name": info.name if info else None,
            "w": info.width if info else 0, "h": info.height if info else 0,
        }

    def _publish_state(self) -> None:
        wire.send_parts(self.pub, [wire.TOPIC_STATE, wire.pack(self.state())])

    def _set_connected(self, connected: bool, error: str | None = None) -> None:
        if connected != self.connected or error != self.error:
            self.connected, self.error, self.since = connected, error, time.time()
            self._publish_state()

    # -- the session ---------------------------------------------------------------------
    async def _run_sessions(self) -> None:
        delay = BACKOFF_FIRST
        where = f"{self.cfg.host}:{self.cfg.port}"
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self.session = await RFBSession.open(self.cfg.session_options())
                self.connects += 1
                self.epoch = time.time_ns() // 1000
                self.seq = 0
                info = self.session.info
                log.info("connected to %s: RFB %s, %s, %dx%d %r", where, info.version,
                         info.security_used, info.width, info.height, info.name)
                self._set_connected(True)
                await self._consume(self.session)
            except RFBError as e:
                log.warning("session with %s ended: %s", where, e)
                self._set_connected(False, str(e))
            finally:
                if self.session is not None:
                    await self.session.close()
                self.session = None
            if self._stopping.is_set():
                break
            if time.monotonic() - started > STABLE_SESSION:
                delay = BACKOFF_FIRST
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, BACKOFF_MAX)

    async def _consume(self, session: RFBSession) -> None:
        async for event in session.events():
            if isinstance(event, FrameUpdate):
                self._publish_update(session, event)
            elif isinstance(event, CutText):
                self.clipboard = event.text
                wire.send_parts(self.pub, [wire.TOPIC_CLIP, wire.pack({"epoch": self.epoch, "text": event.text})])
            elif isinstance(event, Bell):
                wire.send_parts(self.pub, [wire.TOPIC_BELL, wire.pack({"epoch": self.epoch})])

    def _publish_update(self, session: RFBSession, update: FrameUpdate) -> None:
        fb = session.framebuffer
        fb_h, fb_w = fb.shape[:2]
        self.seq += 1
        rects = [(0, 0, fb_w, fb_h)] if update.resized else update.rects
        header = {"epoch": self.epoch, "seq": self.seq, "t": time.time(), "w": fb_w, "h": fb_h,
                  "rects": [list(r) for r in rects], "resized": update.resized}
        if update.cursor_changed:
            header["cursor"] = {"x": session.cursor.position[0], "y": session.cursor.position[1]}
        # A copy per rect: the framebuffer changes under the next update while ZeroMQ may
        # still be sending this one.
        buffers = [fb[y:y + h, x:x + w].copy() for x, y, w, h in rects]
        packed = wire.pack(header)
        wire.send_parts(self.pub, [wire.TOPIC_DAMAGE, packed])
        wire.send_parts(self.pub, [wire.TOPIC_FRAME, packed] + buffers)
        self.frames_published += 1
        self.bytes_published += sum(b.nbytes for b in buffers)

    # -- requests --------------------------------------------------------------------------
    async def _serve_requests(self) -> None:
        while True:
            parts = await self.ctl.recv_multipart()
            envelope, verb, body = parts[:-2], parts[-2], wire.unpack(parts[-1])
            try:
                reply = await self._handle(verb, body)
            except (ValueError, KeyError, TypeError) as e:
                reply = wire.err_parts(f"bad {verb.decode(errors='replace')} request: {e}")
            except RFBError as e:
                reply = wire.err_parts(f"desktop {self.cfg.name}: {e}")
            wire.send_parts(self.ctl, envelope + reply)

    def _disconnected_error(self) -> list:
        since = time.strftime("%H:%M:%S", time.localtime(self.since))
        reason = f" ({self.error})" if self.error else ""
        return wire.err_parts(f"desktop {self.cfg.name} is disconnected since {since}{reason}, reconnecting")

    async def _handle(self, verb: bytes, body: dict) -> list:
        if verb == b"status":
            return wire.ok_parts(self.status())
        if verb == b"clipboard":
            return wire.ok_parts({"text": self.clipboard, "epoch": self.epoch})
        session = self.session
        if session is None or not self.connected:
            return self._disconnected_error()
        if verb == b"snapshot":
            header = dict(self.state())
            return wire.ok_parts(header, [session.framebuffer.copy()])
        if verb == b"crop":
            x, y, w, h = (int(body[k]) for k in ("x", "y", "w", "h"))
            fb_h, fb_w = session.framebuffer.shape[:2]
            if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > fb_w or y + h > fb_h:
                raise ValueError(f"region {w}x{h}+{x}+{y} is not inside the {fb_w}x{fb_h} desktop")
            crop = np.ascontiguousarray(session.framebuffer[y:y + h, x:x + w])
            return wire.ok_parts({"epoch": self.epoch, "seq": self.seq, "x": x, "y": y, "w": w, "h": h}, [crop])
        if verb == b"input":
            notes = []
            for action in body["actions"]:
                note = await self._input(session, action)
                if note:
                    notes.append(note)
            return wire.ok_parts({"epoch": self.epoch, "seq": self.seq, "notes": notes})
        raise ValueError(f"unknown verb {verb!r}")

    async def _input(self, session: RFBSession, action: dict) -> str | None:
        """Send one input action; return a note for the caller when something was lost."""
        if "key" in action:
            await session.key(int(action["key"]), bool(action["down"]))
        elif "pointer" in action:
            x, y = action["pointer"]
            await session.pointer(int(x), int(y), int(action.get("buttons", 0)))
        elif "cut_text" in action:
            sent = await session.cut_text(str(action["cut_text"]))
            if sent.replaced and not sent.utf8:
                return (f"the server takes only Latin-1 clipboard text: {sent.replaced} "
                        "character(s) were sent as '?'")
        elif "sleep_ms" in action:
            await asyncio.sleep(min(float(action["sleep_ms"]), 10_000) / 1000)
        else:
            raise ValueError(f"unknown input action {sorted(action)}")
        return None

    def status(self) -> dict:
        s = self.state()
        session = self.session
        s.update({"frames_published": self.frames_published, "bytes_published": self.bytes_published,
                  "connects": self.connects, "pid": os.getpid()})
        if session is not None and session.info is not None:
            s.update({"bytes_received": session.bytes_read, "updates_received": session.updates_received,
                      "encodings_seen": sorted(session.info.encodings_seen),
                      "security": session.info.security_used, "protocol": session.info.version})
        return s

    async def _heartbeat(self) -> None:
        """The state once a second for subscribers, and a heartbeat for the supervisor."""
        beat = Heartbeat(self.runtime_dir, self._rates)
        try:
            while True:
                beat.beat()
                await asyncio.sleep(HEARTBEAT_INTERVAL)
                self._publish_state()
        finally:
            beat.close()

    def _rates(self) -> dict:
        """fps and bytes/s since the previous heartbeat, for `vncmcp stats`."""
        now = time.monotonic()
        received = self.session.bytes_read if self.session else 0
        last = getattr(self, "_last_rates", None)
        self._last_rates = (now, self.frames_published, received)
        figures = {"connected": self.connected, "desktop": self.cfg.name, "frames": self.frames_published,
                   "error": self.error}
        if last is not None and now > last[0]:
            dt = now - last[0]
            figures["fps"] = round((self.frames_published - last[1]) / dt, 1)
            figures["bytes_per_s"] = int(max(received - last[2], 0) / dt)
        return figures

    # -- lifetime ------------------------------------------------------------------------
    async def run(self) -> None:
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 200)
        self.pub.bind(self.pub_endpoint)
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        self.ctl.bind(self.ctl_endpoint)
        tasks = [asyncio.create_task(c) for c in (self._run_sessions(), self._serve_requests(), self._heartbeat())]
        try:
            await self._stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.session is not None:
                await self.session.close()
            self.pub.close()
            self.ctl.close()
            for endpoint in (self.pub_endpoint, self.ctl_endpoint):
                try:
                    os.unlink(endpoint[len("ipc://"):])
                except FileNotFoundError:
                    pass

    def stop(self) -> None:
        self._stopping.set()


def main_for(desktop_cfg, runtime_dir: str) -> int:
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s vnc[%(process)d] %(levelname)s %(message)s")

    async def amain():
        worker = VncWorker(desktop_cfg, runtime_dir)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()
    asyncio.run(amain())
    return 0
