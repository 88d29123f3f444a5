"""Drive a real RFB session from synchronous tests."""
from __future__ import annotations

import asyncio
import time

import numpy as np

from workers.rfb import CutText, FrameUpdate, RFBSession, SessionOptions
from workers.rfb.keysyms import char_keysym
from xshot import root_image


class Pump:
    """Consumes a session's events in the background and remembers them."""

    def __init__(self, session: RFBSession):
        self.session = session
        self.updates: list[FrameUpdate] = []
        self.cut_texts: list[str] = []
        self.error: BaseException | None = None
        self.last_event = time.monotonic()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        try:
            async for event in self.session.events():
                self.last_event = time.monotonic()
                if isinstance(event, FrameUpdate):
                    self.updates.append(event)
                elif isinstance(event, CutText):
                    self.cut_texts.append(event.text)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            self.error = e

    async def quiet(self, ms: float = 150, timeout: float = 10) -> None:
        """Wait until no event arrived for `ms` (at least one full frame first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error:
                raise self.error
            if self.updates and time.monotonic() - self.last_event > ms / 1000:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError("the frame never went quiet")

    async def until(self, predicate, timeout: float = 10, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error:
                raise self.error
            if predicate():
                return
            await asyncio.sleep(interval)
        raise TimeoutError("condition not met")

    async def close(self):
        await self.session.close()
        self.task.cancel()
        try:
            await self.task
        except BaseException:  # noqa: BLE001
            pass


def frame_rgb(session: RFBSession) -> np.ndarray:
    return session.framebuffer[:, :, :3]


async def matches_x_server(pump: Pump, env: dict, timeout: float = 10) -> bool:
    """True once our frame equals the X server's root image exactly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pump.quiet()
        truth = await asyncio.to_thread(root_image, env)
        ours = frame_rgb(pump.session)
        if ours.shape == truth.shape and np.array_equal(ours, truth):
            return True
        await asyncio.sleep(0.1)
    return False


def mismatch_report(session: RFBSession, env: dict) -> str:
    truth = root_image(env)
    ours = frame_rgb(session)
    if ours.shape != truth.shape:
        return f"shape {ours.shape} vs X server {truth.shape}"
    diff = np.any(ours != truth, axis=2)
    ys, xs = np.nonzero(diff)
    return f"{diff.sum()} pixels differ, within x {xs.min()}-{xs.max()}, y {ys.min()}-{ys.max()}"


async def type_text(session: RFBSession, text: str) -> None:
    for ch in text:
        keysym = char_keysym(ch)
        await session.key(keysym, True)
        await session.key(keysym, False)


def options_for(desktop, **kw) -> SessionOptions:
    return SessionOptions(host="127.0.0.1", port=desktop.port, **kw)
