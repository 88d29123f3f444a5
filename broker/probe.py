"""`vncmcp probe`: connect once with the service's settings and say what the server is."""
from __future__ import annotations

import asyncio
import sys
import time

from workers.rfb import (AuthFailed, ConnectFailed, FrameUpdate, ProtocolError, RFBError, RFBSession,
                         SecurityError, ServerClosed)

EXIT_CODES = {ConnectFailed: 3, AuthFailed: 4, SecurityError: 5, ProtocolError: 6, ServerClosed: 6}


async def _probe(desktop, screenshot: str | None, settle: float) -> dict:
    started = time.perf_counter()
    session = await RFBSession.open(desktop.session_options())
    first_pixels = None
    try:
        events = session.events()
        deadline = time.monotonic() + desktop.timeout
        while time.monotonic() < deadline:
            wait = settle if first_pixels else deadline - time.monotonic()
            try:
                event = await asyncio.wait_for(events.__anext__(), max(wait, 0.01))
            except asyncio.TimeoutError:
                if first_pixels:
                    break
                raise ConnectFailed(f"no frame from {desktop.host}:{desktop.port} within {desktop.timeout:g} s") from None
            if isinstance(event, FrameUpdate) and event.rects and not event.resized and first_pixels is None:
                first_pixels = time.perf_counter() - started
        info = session.info
        if screenshot:
            from PIL import Image
            Image.fromarray(session.framebuffer[:, :, :3].copy()).save(screenshot)
        return {
            "server": f"{desktop.host}:{desktop.port}",
            "protocol": f"{info.version} (using {info.used_version})",
            "security offered": ", ".join(info.security_offered),
            "security used": info.security_used,
            "desktop name": info.name,
            "desktop size": f"{info.width}x{info.height}",
            "pixel format": info.pixel_format.describe(),
            "encodings sent": ", ".join(sorted(info.encodings_seen)) or "none",
            "first frame": f"{first_pixels * 1000:.0f} ms after connect" if first_pixels else "not received",
            "bytes received": session.bytes_read,
        }
    finally:
        await session.close()


def run(desktop, screenshot: str | None = None, settle: float = 0.5) -> int:
    try:
        result = asyncio.run(_probe(desktop, screenshot, settle))
    except RFBError as e:
        print(f"vncmcp probe: {e}", file=sys.stderr)
        return next((code for kind, code in EXIT_CODES.items() if isinstance(e, kind)), 1)
    except OSError as e:
        print(f"vncmcp probe: {e}", file=sys.stderr)
        return 1
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if screenshot:
        print(f"{'screenshot':<{width}}  {screenshot}")
    return 0
