"""Where the frontend's screen text comes from: a small adapter with two implementations.

    source.read(link, region, timeout) -> Reading         # text of the current screen
    source.wait_update(link, token, timeout) -> bool      # until the text may differ from
                                                          # the reading with that token
    await source.health(link) -> dict

- BrokerText: the service's OCR broker through broker/ocr_client.py: a local mirror of
  its store answers reads without a round trip (DESIGN: the frontend answers from the
  broker's store).
- NoText: no broker client installed; every read says so.
A test can pass its own source (the same three methods) to Frontend.

`link` is the frontend's DesktopLink (its name and frame mirror). Reads raise
OcrUnavailable with a message for the tool result when there is no text to be had.
"""
from __future__ import annotations

import asyncio
import time

from mcp_frontend.text import Box, Reading, lines_from_dicts, select

STORE_START_TIMEOUT = 2.0


class OcrUnavailable(RuntimeError):
    """No text: the message starts "OCR unavailable:" and says why."""


class NoText:
    """The source used when there is no OCR at all: every read says why."""

    name = "none"

    def __init__(self, reason: str):
        self.reason = reason

    async def read(self, link, region: Box | None = None, timeout: float = 5.0) -> Reading:
        raise OcrUnavailable(f"OCR unavailable: {self.reason}")

    async def wait_update(self, link, token, timeout: float) -> bool:
        return await link.mirror.wait_change(link.mirror.version if token is None else token, timeout)

    async def health(self, link) -> dict:
        return {"available": False, "source": self.name, "error": f"OCR unavailable: {self.reason}"}

    async def close(self) -> None:
        pass


class BrokerText:
    """The OCR broker's store, mirrored here (broker.ocr_client.OcrMirror, one per desktop).

    A read is answered from the local copy of the store when the store is current for the
    frame this frontend mirrors: no round trip. When the store is behind (the screen just
    changed), an ocr_now request makes the broker read the new lines first and answers once
    they are in. Waiting for text follows the store's update stream.
    """

    name = "broker"

    def __init__(self, ctx, runtime_dir: str):
        from broker.ocr_client import OcrClient, OcrMirror
        from broker.wire import WireError
        self._client = OcrClient(ctx, runtime_dir)
        self._mirror_class = OcrMirror
        self._wire_error = WireError
        self._mirrors: dict = {}
        self._error: str | None = None
        self.local_reads = self.remote_reads = 0

    def _unavailable(self, e: Exception) -> OcrUnavailable:
        message = str(e)
        self._error = message if message.startswith("OCR unavailable") else f"OCR unavailable: {message}"
        return OcrUnavailable(self._error)

    async def _store(self, link):
        """The desktop's store mirror, started on first use; it follows the broker by itself
        from then on (and finds it again after a restart)."""
        mirror = self._mirrors.get(link.name)
        if mirror is None:
            mirror = self._mirrors[link.name] = self._mirror_class(self._client, link.name)
            try:
                # Returns at the first snapshot, or at once with an error when there is no
                # broker (the mirror keeps trying in the background either way).
                await mirror.start(timeout=STORE_START_TIMEOUT)
            except self._wire_error:
                pass
        return mirror

    @staticmethod
    def _current(store, frames) -> bool:
        return store.rev >= 0 and store.epoch == frames.epoch and store.seq >= frames.seq

    async def read(self, link, region: Box | None = None, timeout: float = 5.0) -> Reading:
        store, frames = await self._store(link), link.mirror
        if self._current(store, frames):
            self.local_reads += 1
            lines = lines_from_dicts(store.sorted_lines(region))
            return Reading(select(lines, region) if region else lines, frames.version,
                           source=self.name, token=store.rev)
        version = frames.version
        try:
            # stale_ok: on a screen that never stops changing, text marked stale beats none.
            answer = await self._client.read(link.name, region, timeout=timeout, stale_ok=True)
        except self._wire_error as e:
            raise self._unavailable(e) from None
        self._error = None
        self.remote_reads += 1
        lines = lines_from_dicts(answer.get("lines") or [])
        same_epoch = answer.get("epoch") == frames.epoch
        stale = bool(answer.get("stale")) or not same_epoch or frames.version != version
        return Reading(select(lines, region) if region else lines, version, stale=stale,
                       source=self.name, token=answer.get("rev", store.rev))

    async def wait_update(self, link, token, timeout: float) -> bool:
        store = await self._store(link)
        if token is None or store.rev > token:
            return True
        if store.rev < token:
            # The reading came from the broker ahead of our copy of its store (or from a
            # restarted broker, whose revs start again): wait for one update, no more.
            await store.wait_changed(timeout)
            return True
        deadline = time.monotonic() + timeout
        while store.rev == token:
            left = deadline - time.monotonic()
            if left <= 0 or not await store.wait_changed(left):
                return store.rev != token
        return True

    async def health(self, link) -> dict:
        store = await self._store(link)
        out = {"available": self._error is None and store.error is None, "source": self.name,
               "store_rev": store.rev, "store_seq": store.seq,
               "current": self._current(store, link.mirror)}
        error = self._error or store.error
        if error:
            out["error"] = error if error.startswith("OCR unavailable") else f"OCR unavailable: {error}"
        try:
            status = await asyncio.wait_for(self._client.status(), 1.0)
            out.update({k: status[k] for k in ("queue", "inflight", "latency_ms", "error") if k in status})
            out["workers"] = len(status.get("workers") or [])
        except (self._wire_error, asyncio.TimeoutError) as e:
            out["available"] = False
            out.setdefault("error", f"OCR unavailable: {e or 'the broker did not answer'}")
        return out

    async def close(self) -> None:
        for mirror in self._mirrors.values():
            await mirror.close()
        self._client.close()


def default_source(ctx, runtime_dir: str):
    """The broker when broker/ocr_client.py is installed, else a source that says OCR is
    not available."""
    try:
        return BrokerText(ctx, runtime_dir)
    except ImportError:
        return NoText("the OCR broker client (broker/ocr_client.py) is not installed")
