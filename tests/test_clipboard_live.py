"""Clipboard (plain and Extended Clipboard), server-side resizes and QEMU key events,
against real servers: TigerVNC's Xvnc and x11vnc on Xvfb.

What the servers do, as these tests rely on it:
- Xvnc (TigerVNC 1.12) speaks Extended Clipboard with Notify/Request, so text goes both
  ways as exact UTF-8. It syncs CLIPBOARD and PRIMARY (-SendPrimary, -SetPrimary).
- x11vnc 0.9.16 takes Latin-1 only. Its libvncserver (0.9.14) advertises Extended Clipboard
  but x11vnc never takes the UTF-8, so the client sends Latin-1 as well. x11vnc creates the
  window it owns selections with only once it believes a window manager runs, unless
  X11VNC_AVOID_WINDOWS=never, and creates it only in its event loop, at times seconds
  after the first viewer connected: cut text arriving before then is lost. It sends X
  selections to viewers only 15 s after a viewer connected (sel_waittime, not
  configurable), polling with target STRING (Latin-1).
"""
import asyncio
import os
import subprocess
import time

import pytest

from rfbtools import Pump, matches_x_server, mismatch_report, options_for
from workers.rfb import RFBSession
from broker.demo import start_x11vnc, start_xvnc

UNICODE_TEXT = "Grüße — ½ 日本\nzweite Zeile"
LATIN1_TEXT = "Grüße, naïve café ½ ± ¿\nsecond line"


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def set_x_selection(desktop, data: bytes, selection: str = "clipboard", target: str | None = None):
    """An X client (xclip, kept in the foreground) that owns `selection` with `data`."""
    argv = ["xclip", "-quiet", "-i", "-selection", selection] + (["-t", target] if target else [])
    proc = desktop.run_client(argv, stdin=subprocess.PIPE)
    proc.stdin.write(data)
    proc.stdin.close()
    return proc


async def read_x_selection(desktop, selection: str = "clipboard", target: str | None = None) -> bytes:
    """The selection as an X client pastes it. In a thread: the server may have to fetch it
    from our session first, whose events must keep flowing meanwhile."""
    argv = ["xclip", "-o", "-selection", selection] + (["-t", target] if target else [])
    result = await asyncio.to_thread(desktop.run, argv, timeout=10)
    return result.stdout


async def until_selection(desktop, expected: bytes, selection: str, target: str | None = None,
                          timeout: float = 10) -> bytes:
    deadline = time.monotonic() + timeout
    got = b""
    while time.monotonic() < deadline:
        got = await read_x_selection(desktop, selection, target)
        if got == expected:
            break
        await asyncio.sleep(0.1)
    return got


async def open_pumped(desktop) -> tuple[RFBSession, Pump]:
    session = await RFBSession.open(options_for(desktop))
    pump = Pump(session)
    await pump.quiet()
    return session, pump


async def x11vnc_selection_ready(desktop, timeout: float = 15) -> None:
    """Wait for the 1x1 window at +3+2 that x11vnc owns selections with."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tree = await asyncio.to_thread(desktop.run, ["xwininfo", "-root", "-children"], timeout=10)
        if b"1x1+3+2" in tree.stdout:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("x11vnc never created its selection window")


@pytest.fixture
def xvnc_clip():
    desktop = start_xvnc(geometry="800x600", extra_args=["-SendPrimary=1", "-SetPrimary=1"])
    try:
        yield desktop
    finally:
        desktop.stop()


@pytest.fixture
def x11vnc_clip():
    desktop = start_x11vnc(geometry="800x600", extra_args=["-env", "X11VNC_AVOID_WINDOWS=never"])
    try:
        yield desktop
    finally:
        desktop.stop()


# -- Xvnc: Extended Clipboard, UTF-8 ---------------------------------------------------------

@pytest.mark.parametrize("selection", ["clipboard", "primary"])
def test_xvnc_clipboard_from_x_arrives_as_utf8(xvnc_clip, selection):
    async def main():
        session, pump = await open_pumped(xvnc_clip)
        try:
            await pump.until(lambda: session.info.extended_clipboard)
            assert "ExtendedClipboard" in session.info.encodings_seen
            set_x_selection(xvnc_clip, UNICODE_TEXT.encode(), selection)
            await pump.until(lambda: UNICODE_TEXT in pump.cut_texts)
            # A second change arrives too (each one is a new Notify, Request, Provide).
            set_x_selection(xvnc_clip, "second: 日本語".encode(), selection)
            await pump.until(lambda: "second: 日本語" in pump.cut_texts)
        finally:
            await pump.close()
    run(main())


def test_xvnc_clipboard_to_x_is_exact_utf8(xvnc_clip):
    async def main():
        session, pump = await open_pumped(xvnc_clip)
        try:
            await pump.until(lambda: session.info.extended_clipboard)
            sent = await session.cut_text(UNICODE_TEXT)
            assert (sent.utf8, sent.latin1, sent.replaced) == (True, False, 0)
            expected = UNICODE_TEXT.encode()
            assert await until_selection(xvnc_clip, expected, "clipboard") == expected
            assert await until_selection(xvnc_clip, expected, "primary") == expected
            # Replacing our clipboard replaces the X one.
            await session.cut_text("und noch einmal ½")
            expected = "und noch einmal ½".encode()
            assert await until_selection(xvnc_clip, expected, "clipboard") == expected
            assert pump.error is None
        finally:
            await pump.close()
    run(main())


def test_xvnc_clipboard_both_ways_in_turn(xvnc_clip):
    """X side, then ours, then the X side again: each time the newer owner wins."""
    async def main():
        session, pump = await open_pumped(xvnc_clip)
        try:
            await pump.until(lambda: session.info.extended_clipboard)
            set_x_selection(xvnc_clip, "from X ½".encode())
            await pump.until(lambda: "from X ½" in pump.cut_texts)
            await session.cut_text("from us 日本")
            assert await until_selection(xvnc_clip, "from us 日本".encode(), "clipboard") == "from us 日本".encode()
            set_x_selection(xvnc_clip, "from X again — ok".encode())
            await pump.until(lambda: "from X again — ok" in pump.cut_texts)
        finally:
            await pump.close()
    run(main())


# -- x11vnc: Latin-1 -------------------------------------------------------------------------

def test_x11vnc_clipboard_latin1_both_ways(x11vnc_clip):
    async def main():
        session, pump = await open_pumped(x11vnc_clip)
        connected = time.monotonic()
        try:
            await x11vnc_selection_ready(x11vnc_clip)
            # Ours to X: the Latin-1 copy is what x11vnc takes (see the module docstring).
            sent = await session.cut_text(LATIN1_TEXT)
            assert sent.latin1 and sent.replaced == 0
            expected = LATIN1_TEXT.encode("latin-1")
            assert await until_selection(x11vnc_clip, expected, "clipboard", "STRING") == expected
            assert await until_selection(x11vnc_clip, expected, "primary", "STRING") == expected

            # Outside Latin-1: replaced, and the result says how many.
            sent = await session.cut_text("Grüße 日本")
            assert sent.latin1 and sent.replaced == 2
            expected = "Grüße ??".encode("latin-1")
            assert await until_selection(x11vnc_clip, expected, "clipboard", "STRING") == expected

            # X to us: x11vnc polls the selection as STRING, from 15 s after we connected.
            text = "X side: café ½ ±"
            set_x_selection(x11vnc_clip, text.encode("latin-1"), "clipboard", "STRING")
            await pump.until(lambda: text in pump.cut_texts, timeout=30)
            assert time.monotonic() - connected > 10  # the wait above is x11vnc's, not ours
            assert pump.error is None
        finally:
            await pump.close()
    run(main())


# -- server-side resize (Xvnc, RandR) -------------------------------------------------------

def test_xvnc_resize_from_the_x_side(xvnc):
    xvnc.xterm(geometry="60x10+30+40", command=["sh", "-c", "echo resize me; sleep 120"])
    time.sleep(0.5)

    async def resize_to(session, pump, argv, size):
        seen = len(pump.updates)
        result = await asyncio.to_thread(xvnc.run, ["xrandr"] + argv, timeout=10)
        assert result.returncode == 0, result.stderr
        width, height = size
        await pump.until(lambda: (session.info.width, session.info.height) == size
                         and any(u.resized for u in pump.updates[seen:]))
        assert session.framebuffer.shape == (height, width, 4)
        ok = await matches_x_server(pump, xvnc.env)
        assert ok, mismatch_report(session, xvnc.env)

    async def main():
        session, pump = await open_pumped(xvnc)
        try:
            assert await matches_x_server(pump, xvnc.env), mismatch_report(session, xvnc.env)
            await resize_to(session, pump, ["--fb", "1024x768"], (1024, 768))   # any size
            await resize_to(session, pump, ["-s", "1280x720"], (1280, 720))     # a mode
            await resize_to(session, pump, ["-s", "800x600"], (800, 600))       # and back
            assert pump.error is None and not pump.task.done()
        finally:
            await pump.close()
    run(main())


# -- QEMU Extended Key Event ---------------------------------------------------------------

# XT scancodes (set 1): A, B, Return, left Control, D.
SC_A, SC_B, SC_RETURN, SC_LCTRL, SC_D = 0x1E, 0x30, 0x1C, 0x1D, 0x20


def start_typing_target(desktop) -> str:
    out = os.path.join(desktop.workdir, "typed.txt")
    desktop.xterm(geometry="60x5+0+0", command=["sh", "-c", f"stty -echo; cat > {out}"])
    time.sleep(0.8)
    return out


async def tap(session, keysym, keycode):
    await session.qemu_key(keysym, keycode, True)
    await session.qemu_key(keysym, keycode, False)


@pytest.mark.parametrize("raw_keyboard", [True, False], ids=["scancodes", "keysyms"])
def test_qemu_key_events_type_into_xterm(raw_keyboard):
    """With -RawKeyboard Xvnc types by scancode alone (we send keysym 0, "unknown");
    without it, it maps the keysym that goes along."""
    extra = ["-RawKeyboard=1"] if raw_keyboard else []
    with start_xvnc(geometry="640x480", extra_args=extra) as desktop:
        out = start_typing_target(desktop)

        def keysym(value):
            return 0 if raw_keyboard else value

        async def main():
            session, pump = await open_pumped(desktop)
            try:
                await pump.until(lambda: session.info.qemu_key_events)
                await session.pointer(100, 30)  # focus follows the pointer in a bare X server
                await tap(session, keysym(ord("a")), SC_A)
                await tap(session, keysym(ord("b")), SC_B)
                await tap(session, keysym(0xFF0D), SC_RETURN)
                await session.qemu_key(keysym(0xFFE3), SC_LCTRL, True)
                await tap(session, keysym(ord("d")), SC_D)
                await session.qemu_key(keysym(0xFFE3), SC_LCTRL, False)
                await pump.until(lambda: os.path.exists(out) and open(out, "rb").read().endswith(b"\n"))
            finally:
                await pump.close()
        run(main())
        with open(out, "rb") as f:
            assert f.read() == b"ab\n"


def test_qemu_key_falls_back_to_keysym_where_unsupported():
    """x11vnc does not announce QEMU key events: the keysym goes as a plain KeyEvent."""
    with start_x11vnc(geometry="640x480") as desktop:
        out = start_typing_target(desktop)

        async def main():
            session, pump = await open_pumped(desktop)
            try:
                assert not session.info.qemu_key_events
                with pytest.raises(ValueError):
                    await session.qemu_key(0, SC_A, True)
                await session.pointer(100, 30)
                await tap(session, ord("a"), SC_A)
                await tap(session, 0xFF0D, SC_RETURN)
                await pump.until(lambda: os.path.exists(out) and open(out, "rb").read().endswith(b"\n"))
            finally:
                await pump.close()
        run(main())
        with open(out, "rb") as f:
            assert f.read() == b"a\n"
