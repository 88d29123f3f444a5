"""The RFB client against a hostile or broken server (tests/scripted_server.py).

Every limit must end the session with the right RFBError subclass and a message that names
what the server sent, without reading (or allocating) what the server merely announced.
"""
from __future__ import annotations

import asyncio
import struct
import time
import tracemalloc
import zlib
from contextlib import contextmanager

import pytest

from scripted_server import (ScriptedServer, bell, copy_rect, cut_text, desktop_size_rect,
                             ext_desktop_size_rect, failure_reason, framebuffer_update, raw_rect,
                             rect, server_init, zlib_rect)
from workers.rfb import (AuthFailed, ConnectFailed, Credentials, CutText, FrameUpdate, Limits,
                         ProtocolError, RFBError, RFBSession, SecurityError, ServerClosed,
                         SessionOptions)
from workers.rfb import constants as C
from workers.rfb.decoders import DECODERS
from workers.rfb.stream import Stream

GB = 1 << 30
MB = 1 << 20
MEMORY_BOUND = 16 * MB   # what a hostile message may cost us at most, all included
PASSWORD = "s3cr3t-Pässwort"
USER = "alice"


def run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def options(server: ScriptedServer, **kw) -> SessionOptions:
    kw.setdefault("timeout", 5)
    return SessionOptions(host="127.0.0.1", port=server.port, **kw)


@contextmanager
def peak_memory():
    """Measures the peak of Python and numpy allocations inside the block: box[0], bytes."""
    box = [0]
    tracemalloc.start()
    try:
        yield box
    finally:
        box[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


@pytest.fixture
def reads(monkeypatch):
    """Every Stream.read(n) the client attempts, in order (recorded before it reads)."""
    log: list[int] = []
    original = Stream.read

    async def read(self, n):
        log.append(n)
        return await original(self, n)
    monkeypatch.setattr(Stream, "read", read)
    return log


async def until_error(session: RFBSession, timeout: float = 5) -> tuple[list, RFBError]:
    """Consume events until the session ends; return (events, the error it ended with)."""
    events = []

    async def consume():
        async for event in session.events():
            events.append(event)
    try:
        await asyncio.wait_for(consume(), timeout)
    except RFBError as e:
        return events, e
    except asyncio.TimeoutError:
        raise AssertionError(f"session still running after {timeout} s; events so far: {events}") from None
    raise AssertionError(f"events() ended without an error; events: {events}")


def sends(*messages: bytes, close: bool = False):
    """A script: read the client's setup, send `messages`, then hang up (close) or wait."""
    async def script(conn):
        await conn.expect_setup()
        for message in messages:
            await conn.send(message)
        if not close:
            await conn.wait_closed()
    return script


async def session_error(server: ScriptedServer, **kw) -> tuple[RFBSession, list, RFBError, int]:
    """Open a session, run it until it fails; (session, events, error, bytes read after ServerInit)."""
    session = await RFBSession.open(options(server, **kw))
    try:
        before = session.bytes_read
        events, error = await until_error(session)
        return session, events, error, session.bytes_read - before
    finally:
        await session.close()


async def open_error(server: ScriptedServer, **kw) -> RFBError:
    """Open a session that must fail during the handshake; return the error."""
    try:
        session = await RFBSession.open(options(server, **kw))
    except RFBError as e:
        return e
    await session.close()
    raise AssertionError("the handshake succeeded")


FBU_HEADER = 4      # type, padding, u16 count
RECT_HEADER = 12    # x, y, w, h, encoding
CUT_HEADER = 8      # type, 3 padding, u32 length


# -- the harness itself ------------------------------------------------------------------------
def test_well_behaved_script_is_decoded():
    """Control: the scripted server speaks correct RFB that the client decodes."""
    red = raw_rect(0, 0, 8, 4, colour=(255, 0, 0))
    copy = copy_rect(10, 20, 8, 4, 0, 0)

    async def main():
        async with ScriptedServer(sends(framebuffer_update(red, copy), bell(), cut_text(b"hello"),
                                        close=True), width=64, height=48, name=b"desk") as server:
            session, events, error, _ = await session_error(server)
            assert session.info.width == 64 and session.info.height == 48 and session.info.name == "desk"
            assert session.info.version == "3.8" and session.info.security_used == "None"
            assert [type(e).__name__ for e in events] == ["FrameUpdate", "Bell", "CutText"]
            assert events[0].rects == [(0, 0, 8, 4), (10, 20, 8, 4)]
            assert events[2].text == "hello"
            fb = session.framebuffer
            assert (fb[0:4, 0:8, :3] == [255, 0, 0]).all() and (fb[20:24, 10:18, :3] == [255, 0, 0]).all()
            assert not fb[4:20].any()
            assert type(error) is ServerClosed
            assert server.connections[0].encodings[:2] == [C.ENC_COPYRECT, C.ENC_RAW]
    run(main())


# -- the banner --------------------------------------------------------------------------------
@pytest.mark.parametrize("banner, message", [
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not an RFB server: it greeted with b'HTTP/1.1 400'"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "not an RFB server: it greeted with b'SSH-2.0-Open'"),
    (b"\x00" * 12, "not an RFB server: it greeted with b'\\x00\\x00"),
    (b"RFB 004.001\n", "server speaks RFB 4.1, only 3.x exists"),
    (b"RFB 003.-08\n", "not an RFB server: it greeted with b'RFB 003.-08\\n'"),
    (b"RFB 0_3.008\n", "not an RFB server: it greeted with b'RFB 0_3.008\\n'"),
    (b"RFB  03.008\n", "not an RFB server: it greeted with b'RFB  03.008\\n'"),
], ids=["http", "ssh", "zeros", "rfb4", "negative-minor", "underscore", "space"])
def test_garbage_banner(banner, message):
    async def handshake(conn):
        await conn.send(banner)
        await conn.wait_closed()

    async def main():
        async with ScriptedServer(handshake=handshake) as server:
            error = await open_error(server)
            assert type(error) is ProtocolError
            assert str(error).startswith(message), str(error)
    run(main())


def test_short_banner_then_close_is_server_closed():
    async def handshake(conn):
        await conn.send(b"RFB ")

    async def main():
        async with ScriptedServer(handshake=handshake) as server:
            error = await open_error(server)
            assert type(error) is ServerClosed
            assert str(error) == "server closed the connection (4 of 12 bytes read)"
    run(main())


# -- stalls and hang-ups during the handshake ------------------------------------------------
async def _stall_silent(conn):
    await conn.stall()


async def _stall_after_banner(conn):
    await conn.version_handshake()
    await conn.stall()


async def _stall_before_server_init(conn):
    await conn.version_handshake()
    await conn.security_handshake()
    await conn.read(1)
    await conn.stall()


async def _slowloris(conn):
    """Every byte arrives in time for a per-read timeout; the whole never does."""
    await conn.version_handshake()
    await conn.security_handshake()
    await conn.read(1)
    await conn.send_slowly(server_init(64, 48, b"x" * 100), delay=0.05)
    await conn.stall()


@pytest.mark.parametrize("handshake", [_stall_silent, _stall_after_banner, _stall_before_server_init, _slowloris],
                         ids=["silent", "after-banner", "before-server-init", "slowloris"])
def test_stalled_handshake_times_out(handshake):
    async def main():
        async with ScriptedServer(handshake=handshake) as server:
            started = time.monotonic()
            error = await open_error(server, timeout=0.6)
            elapsed = time.monotonic() - started
            assert type(error) is ConnectFailed
            assert str(error) == f"127.0.0.1:{server.port} did not complete the RFB handshake within 0.6 s"
            assert 0.6 <= elapsed < 1.6, elapsed
    run(main())


def test_close_during_security_types_is_server_closed():
    async def handshake(conn):
        await conn.version_handshake()
        await conn.send(bytes([2, C.SEC_NONE]))  # announces two types, sends one, hangs up

    async def main():
        async with ScriptedServer(handshake=handshake) as server:
            error = await open_error(server)
            assert type(error) is ServerClosed
            assert str(error) == "server closed the connection (1 of 2 bytes read)"
    run(main())


# -- failure reasons ---------------------------------------------------------------------------
async def _refuse_38(conn):
    await conn.version_handshake()
    await conn.send(b"\x00" + failure_reason(b"", length=GB))
    await conn.send_stream(16 * MB)
    await conn.stall()


async def _refuse_33(conn):
    await conn.version_handshake()
    await conn.send(struct.pack(">I", C.SEC_INVALID) + failure_reason(b"", length=GB))
    await conn.send_stream(16 * MB)
    await conn.stall()


async def _auth_failure(conn):
    await conn.version_handshake()
    await conn.send(bytes([1, C.SEC_VNC_AUTH]))
    assert (await conn.read(1))[0] == C.SEC_VNC_AUTH
    await conn.send(b"\x01" * 16)
    await conn.read(16)
    await conn.send(struct.pack(">I", 1) + failure_reason(b"", length=GB))
    await conn.send_stream(16 * MB)
    await conn.stall()


@pytest.mark.parametrize("banner, handshake, error_type, prefix", [
    (b"RFB 003.008\n", _refuse_38, SecurityError, "server refused the connection: AAAA"),
    (b"RFB 003.003\n", _refuse_33, SecurityError, "server refused the connection: AAAA"),
    (b"RFB 003.008\n", _auth_failure, AuthFailed, "VNC authentication failed: AAAA"),
], ids=["no-security-types", "rfb33-invalid", "security-result"])
def test_one_gigabyte_failure_reason_is_not_read_whole(reads, banner, handshake, error_type, prefix):
    async def main():
        async with ScriptedServer(banner=banner, handshake=handshake) as server:
            with peak_memory() as peak:
                error = await open_error(server, credentials=Credentials(password=PASSWORD))
            assert type(error) is error_type
            text = str(error)
            assert text.startswith(prefix)
            assert text.endswith("A... (truncated: server sent a reason of 1073741824 bytes, limit 4096)")
            assert text.count("A") == 4096
            assert max(reads) == 4096 and sum(reads) < 4096 + 100, reads
            assert peak[0] < MEMORY_BOUND, peak[0]
    run(main())


def test_short_failure_reason_is_reported_whole():
    async def handshake(conn):
        await conn.version_handshake()
        await conn.send(b"\x00" + failure_reason(b"too many connections"))
        await conn.stall()

    async def main():
        async with ScriptedServer(handshake=handshake) as server:
            error = await open_error(server)
            assert type(error) is SecurityError
            assert str(error) == "server refused the connection: too many connections"
    run(main())


# -- VNC authentication ------------------------------------------------------------------------
def test_vnc_auth_right_password_connects():
    async def main():
        async with ScriptedServer(security=[C.SEC_VNC_AUTH], password=PASSWORD) as server:
            session = await RFBSession.open(options(server, credentials=Credentials(password=PASSWORD)))
            try:
                assert session.info.security_used == "VncAuth"
                assert session.info.security_offered == ["VncAuth"]
            finally:
                await session.close()
    run(main())


@pytest.mark.parametrize("banner, message", [
    (b"RFB 003.008\n", "VNC authentication failed: Authentication failed"),
    (b"RFB 003.007\n", "VNC authentication failed"),
    (b"RFB 003.003\n", "VNC authentication failed"),
], ids=["3.8", "3.7", "3.3"])
def test_vnc_auth_wrong_password(banner, message):
    async def main():
        async with ScriptedServer(banner=banner, security=[C.SEC_VNC_AUTH], password="other") as server:
            error = await open_error(server, credentials=Credentials(password=PASSWORD))
            assert type(error) is AuthFailed
            assert str(error) == message
            assert PASSWORD not in repr(error.args) and PASSWORD[:8] not in str(error)
            assert error.__cause__ is None
    run(main())


# -- Apple Remote Desktop ----------------------------------------------------------------------
def test_ard_right_credentials_connects_as_apple_3_889():
    async def main():
        async with ScriptedServer(banner=b"RFB 003.889\n", security=[C.SEC_ARD, C.SEC_VNC_AUTH],
                                  username=USER, password=PASSWORD, width=1440, height=900,
                                  name=b"Alice's Mac") as server:
            session = await RFBSession.open(options(server, credentials=Credentials(USER, PASSWORD)))
            try:
                info = session.info
                assert info.security_used == "AppleRemoteDesktop"
                assert info.security_offered == ["AppleRemoteDesktop", "VncAuth"]
                assert info.version == "3.889" and info.used_version == "3.8"
                assert (info.width, info.height, info.name) == (1440, 900, "Alice's Mac")
                assert session.framebuffer.shape == (900, 1440, 4)
                conn = server.connections[0]
                assert conn.client_minor == 8 and conn.authenticated_as == USER
            finally:
                await session.close()
    run(main())


@pytest.mark.parametrize("user, password", [(USER, "wrong"), ("mallory", PASSWORD), (USER, PASSWORD[:-1])],
                         ids=["wrong-password", "wrong-user", "prefix-of-password"])
def test_ard_wrong_credentials(user, password):
    async def main():
        async with ScriptedServer(banner=b"RFB 003.889\n", security=[C.SEC_ARD],
                                  username=user, password=password) as server:
            error = await open_error(server, credentials=Credentials(USER, PASSWORD))
            assert type(error) is AuthFailed
            assert str(error) == "Apple Remote Desktop authentication failed: Authentication failed"
            assert PASSWORD not in repr(error.args)
            assert server.connections[0].received_password == PASSWORD  # it was sent, and refused
    run(main())


def test_ard_server_echoing_the_password_does_not_leak_it():
    """An ARD server can decrypt the password; if it puts it in its failure reason, the
    message we raise (and log) still does not contain it."""
    async def main():
        async with ScriptedServer(banner=b"RFB 003.889\n", security=[C.SEC_ARD], username=USER,
                                  password="not this one",
                                  failure=lambda conn: f"bad password {conn.received_password}!".encode()) as server:
            error = await open_error(server, credentials=Credentials(USER, PASSWORD))
            assert type(error) is AuthFailed
            assert str(error) == "Apple Remote Desktop authentication failed: bad password ***!"
    run(main())


def test_ard_without_user_name_is_auth_failed():
    async def main():
        async with ScriptedServer(security=[C.SEC_ARD], username=USER, password=PASSWORD) as server:
            error = await open_error(server, credentials=Credentials(password=PASSWORD))
            assert type(error) is AuthFailed
            assert str(error) == "Apple Remote Desktop authentication needs a user name and a password"
    run(main())


@pytest.mark.parametrize("generator, key_len, message", [
    (2, 8, "server sent a Diffie-Hellman key length of 8 bytes"),
    (2, 65535, "server sent a Diffie-Hellman key length of 65535 bytes"),
    (1, 128, "server sent invalid Diffie-Hellman parameters for Apple Remote Desktop"),
], ids=["key-too-short", "key-too-long", "generator-1"])
def test_ard_bad_diffie_hellman_parameters(reads, generator, key_len, message):
    async def handshake(conn):
        await conn.version_handshake()
        await conn.send(bytes([1, C.SEC_ARD]))
        await conn.read(1)
        await conn.send(struct.pack(">HH", generator, key_len))
        await conn.send_stream(2 * min(key_len, 1024), fill=b"\x7f")
        await conn.stall()

    async def main():
        async with ScriptedServer(handshake=handshake) as server:
            error = await open_error(server, credentials=Credentials(USER, PASSWORD))
            assert type(error) is ProtocolError
            assert str(error) == message
            assert max(reads) <= 1024, reads
    run(main())


# -- the desktop size --------------------------------------------------------------------------
def test_server_init_larger_than_maximum_is_refused_without_allocating():
    async def main():
        async with ScriptedServer(width=65535, height=65535) as server:
            with peak_memory() as peak:
                error = await open_error(server)
            assert type(error) is ProtocolError
            assert str(error) == ("server desktop is 65535x65535, larger than the configured "
                                  "maximum 16384x16384")
            assert peak[0] < MEMORY_BOUND, peak[0]
    run(main())


@pytest.mark.parametrize("width, height, ok", [(640, 480, True), (641, 480, False), (640, 481, False)])
def test_server_init_against_configured_limits(width, height, ok):
    async def main():
        async with ScriptedServer(width=width, height=height) as server:
            opts = dict(limits=Limits(max_width=640, max_height=480))
            if ok:
                session = await RFBSession.open(options(server, **opts))
                assert session.framebuffer.shape == (480, 640, 4)
                await session.close()
            else:
                error = await open_error(server, **opts)
                assert type(error) is ProtocolError
                assert str(error) == (f"server desktop is {width}x{height}, larger than the configured "
                                      "maximum 640x480")
    run(main())


def test_server_init_name_of_four_gigabytes_is_not_read(reads):
    async def handshake(conn):
        await conn.version_handshake()
        await conn.security_handshake()
        await conn.read(1)
        await conn.send(server_init(64, 48, b"", name_length=0xFFFFFFFF))
        await conn.send_stream(16 * MB)
        await conn.stall()

    async def main():
        async with ScriptedServer(handshake=handshake) as server:
            error = await open_error(server)
            assert type(error) is ProtocolError
            assert str(error) == "server sent a desktop name of 4294967295 bytes (limit 65536)"
            assert max(reads) <= 16, reads
    run(main())


@pytest.mark.parametrize("resize", [
    desktop_size_rect(65535, 65535),
    ext_desktop_size_rect(65535, 65535),
], ids=["DesktopSize", "ExtendedDesktopSize"])
def test_resize_larger_than_maximum_is_refused_without_allocating(resize):
    async def main():
        async with ScriptedServer(sends(framebuffer_update(resize))) as server:
            with peak_memory() as peak:
                session, events, error, _ = await session_error(server)
            assert type(error) is ProtocolError
            assert str(error) == ("server desktop is 65535x65535, larger than the configured "
                                  "maximum 16384x16384")
            assert session.framebuffer.shape == (48, 64, 4) and events == []
            assert peak[0] < MEMORY_BOUND, peak[0]
    run(main())


@pytest.mark.parametrize("resize", [desktop_size_rect(100, 80), ext_desktop_size_rect(100, 80)],
                         ids=["DesktopSize", "ExtendedDesktopSize"])
def test_resize_within_limits_is_applied(resize):
    async def main():
        async with ScriptedServer(sends(framebuffer_update(resize), close=True)) as server:
            session, events, error, _ = await session_error(server, limits=Limits(100, 80))
            assert type(error) is ServerClosed
            assert len(events) == 1 and events[0].resized
            assert session.framebuffer.shape == (80, 100, 4)
            assert (session.info.width, session.info.height) == (100, 80)
    run(main())


def test_resize_beyond_configured_limits():
    async def main():
        async with ScriptedServer(sends(framebuffer_update(ext_desktop_size_rect(101, 80)))) as server:
            session, events, error, _ = await session_error(server, limits=Limits(100, 80))
            assert type(error) is ProtocolError
            assert str(error) == "server desktop is 101x80, larger than the configured maximum 100x80"
            assert session.framebuffer.shape == (48, 64, 4)
    run(main())


def test_extended_desktop_size_with_too_many_screens(reads):
    async def main():
        update = framebuffer_update(ext_desktop_size_rect(64, 48, screens=1, screen_count=255))
        async with ScriptedServer(sends(update)) as server:
            session, events, error, _ = await session_error(server)
            assert type(error) is ProtocolError
            assert str(error) == "server sent an ExtendedDesktopSize with 255 screens (limit 64)"
            assert 16 * 255 not in reads
    run(main())


# -- rectangles --------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_rect, message", [
    (raw_rect(60, 40, 10, 10), "server sent a Raw rectangle 10x10+60+40 outside the 64x48 framebuffer"),
    (raw_rect(0, 0, 65, 1), "server sent a Raw rectangle 65x1+0+0 outside the 64x48 framebuffer"),
    (raw_rect(0, 0, 1, 49), "server sent a Raw rectangle 1x49+0+0 outside the 64x48 framebuffer"),
    (rect(65535, 65535, 65535, 65535, C.ENC_RAW),
     "server sent a Raw rectangle 65535x65535+65535+65535 outside the 64x48 framebuffer"),
    (rect(64, 0, 0, 0, C.ENC_RAW) + b"", None),  # empty, on the edge: allowed
    (copy_rect(60, 40, 10, 10, 0, 0), "server sent a CopyRect rectangle 10x10+60+40 outside the 64x48 framebuffer"),
], ids=["raw-corner", "raw-wide", "raw-tall", "raw-max", "raw-empty-edge", "copyrect-destination"])
def test_rectangle_outside_framebuffer(bad_rect, message):
    good = raw_rect(0, 0, 2, 2, colour=(1, 2, 3))

    async def main():
        async with ScriptedServer(sends(framebuffer_update(good), framebuffer_update(bad_rect),
                                        close=message is None)) as server:
            session, events, error, nread = await session_error(server)
            assert isinstance(events[0], FrameUpdate) and events[0].rects == [(0, 0, 2, 2)]
            if message is None:
                assert type(error) is ServerClosed and len(events) == 2
                return
            assert type(error) is ProtocolError
            assert str(error) == message
            # the good update, then only the headers of the bad one: its data is never read
            assert nread == FBU_HEADER + RECT_HEADER + 2 * 2 * 4 + FBU_HEADER + RECT_HEADER
            assert (session.framebuffer[:2, :2, :3] == [1, 2, 3]).all()
    run(main())


@pytest.mark.parametrize("src_x, src_y", [(60, 40), (0, 39), (55, 0), (65535, 65535)])
def test_copyrect_source_outside_framebuffer(src_x, src_y):
    async def main():
        async with ScriptedServer(sends(framebuffer_update(copy_rect(0, 0, 10, 10, src_x, src_y)))) as server:
            session, events, error, _ = await session_error(server)
            assert type(error) is ProtocolError
            assert str(error) == f"CopyRect source 10x10+{src_x}+{src_y} lies outside the 64x48 framebuffer"
    run(main())


@pytest.mark.parametrize("encoding, name", [
    (12345, "encoding 12345"),
    (-1, "encoding -1"),
    (C.ENC_COMPRESS_LEVEL_0 + 9, "CompressLevel9"),
    (C.ENC_JPEG_QUALITY_0 + 9, "JPEGQuality9"),
])
def test_unknown_encoding_in_rectangle(encoding, name):
    async def main():
        update = framebuffer_update(rect(0, 0, 8, 8, encoding, b"\xff" * 256))
        async with ScriptedServer(sends(update)) as server:
            session, events, error, nread = await session_error(server)
            assert encoding not in server.connections[0].encodings
            assert type(error) is ProtocolError
            assert str(error) == f"server sent a rectangle in {name}, which we did not ask for"
            assert nread == FBU_HEADER + RECT_HEADER
    run(main())


# -- zlib --------------------------------------------------------------------------------------
needs_zlib = pytest.mark.skipif(C.ENC_ZLIB not in DECODERS, reason="ZLIB decoder not registered yet")


def _deflate_zeros(size: int) -> bytes:
    """`size` zero bytes as one sync-flushed piece of a zlib stream, built without holding them."""
    compressor = zlib.compressobj(9)
    block = bytes(MB)
    out = []
    for _ in range(size // MB):
        out.append(compressor.compress(block))
    out.append(compressor.compress(bytes(size % MB)))
    out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(out)


@needs_zlib
@pytest.mark.parametrize("inflated", [4 * 4 * 4 + 1, 64 * 1024, MB], ids=["one-byte-more", "64K", "1M-bomb"])
def test_zlib_inflating_beyond_its_rectangle(inflated):
    data = _deflate_zeros(inflated)  # the 1 MB bomb: 1039 bytes, within what 4x4 pixels may take

    async def main():
        update = framebuffer_update(zlib_rect(0, 0, 4, 4, data))
        async with ScriptedServer(sends(update)) as server:
            with peak_memory() as peak:
                session, events, error, _ = await session_error(server, encodings=[C.ENC_ZLIB, C.ENC_RAW])
            assert type(error) is ProtocolError
            assert str(error) == "ZLIB: zlib data inflates beyond the 64 bytes the rectangle can need"
            assert peak[0] < MEMORY_BOUND, peak[0]
    run(main())


@needs_zlib
@pytest.mark.parametrize("extra", [1, 10, 100])
def test_zlib_match_running_past_its_rectangle(extra):
    """A stream cut right after a match that ends past the rectangle: every input byte is
    consumed, and the rest of the match waits inside the inflater, to come out as the start
    of the next rectangle. That, too, inflates beyond the rectangle."""
    compressor = zlib.compressobj(9)
    data = (compressor.compress(bytes(64 + extra)) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-5]
    check = zlib.decompressobj()
    assert len(check.decompress(data, 64)) == 64 and not check.unconsumed_tail  # the premise

    async def main():
        update = framebuffer_update(zlib_rect(0, 0, 4, 4, data), raw_rect(0, 0, 1, 1))
        async with ScriptedServer(sends(update)) as server:
            session, events, error, _ = await session_error(server, encodings=[C.ENC_ZLIB, C.ENC_RAW])
            assert type(error) is ProtocolError
            assert str(error) == "ZLIB: zlib data inflates beyond the 64 bytes the rectangle can need"
    run(main())


@needs_zlib
def test_zlib_bomb_longer_than_its_rectangle_can_need_is_not_read(reads):
    data = _deflate_zeros(256 * MB)

    async def main():
        update = framebuffer_update(zlib_rect(0, 0, 4, 4, data))
        async with ScriptedServer(sends(update)) as server:
            with peak_memory() as peak:
                session, events, error, nread = await session_error(server, encodings=[C.ENC_ZLIB, C.ENC_RAW])
            assert type(error) is ProtocolError
            assert str(error) == (f"ZLIB rectangle 4x4 announces {len(data)} bytes of zlib data, "
                                  "more than 1089 it could need")
            assert nread == FBU_HEADER + RECT_HEADER + 4
            assert peak[0] < MEMORY_BOUND, peak[0]
    run(main())


@needs_zlib
def test_zlib_exact_size_is_decoded():
    """Control for the test above: the same data, exactly the size of the rectangle."""
    pixels = bytes(range(64))
    compressor = zlib.compressobj()
    data = compressor.compress(pixels) + compressor.flush(zlib.Z_SYNC_FLUSH)

    async def main():
        async with ScriptedServer(sends(framebuffer_update(zlib_rect(1, 2, 4, 4, data)), close=True)) as server:
            session, events, error, _ = await session_error(server, encodings=[C.ENC_ZLIB, C.ENC_RAW])
            assert type(error) is ServerClosed and events[0].rects == [(1, 2, 4, 4)]
            assert session.framebuffer[2:6, 1:5].tobytes() == pixels
    run(main())


@needs_zlib
def test_zlib_length_of_four_gigabytes_is_not_buffered():
    async def script(conn):
        await conn.expect_setup()
        await conn.send(framebuffer_update(zlib_rect(0, 0, 4, 4, b"", length=0xFFFFFFFF)))
        await conn.send_stream(16 * MB, fill=b"\x00")
        await conn.stall()

    async def main():
        async with ScriptedServer(script) as server:
            with peak_memory() as peak:
                session, events, error, _ = await session_error(server, encodings=[C.ENC_ZLIB, C.ENC_RAW])
            assert type(error) is ProtocolError
            assert str(error) == "ZLIB rectangle 4x4 announces 4294967295 bytes of zlib data, more than 1089 it could need"
            assert peak[0] < MEMORY_BOUND, peak[0]
    run(main())


# -- cut text ----------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [0x7FFFFFFF, 16 * MB + 1], ids=["2G", "limit+1"])
def test_cut_text_over_limit_is_not_read(length):
    async def script(conn):
        await conn.expect_setup()
        await conn.send(cut_text(b"", length=length))
        await conn.send_stream(16 * MB)
        await conn.stall()

    async def main():
        async with ScriptedServer(script) as server:
            with peak_memory() as peak:
                session, events, error, nread = await session_error(server)
            assert type(error) is ProtocolError
            assert str(error) == f"server sent cut text of {length} bytes (limit 16777216)"
            assert nread == CUT_HEADER
            assert events == []
            assert peak[0] < MEMORY_BOUND, peak[0]
    run(main())


@pytest.mark.parametrize("length, message", [
    # We offer Extended Clipboard, so a length with the top bit set is a negative one: an
    # Extended Clipboard message of -length bytes (rfbproto), never 2-4 GB of text.
    (0xFFFFFFFF, "server sent an Extended Clipboard message of 1 bytes, too short for its flags"),
    (0x80000000, "server sent an Extended Clipboard message of 2147483648 bytes (limit "),
    (0xC0000000, "server sent an Extended Clipboard message of 1073741824 bytes (limit "),
], ids=["4G", "2G", "3G"])
def test_cut_text_lengths_of_gigabytes_with_top_bit_set_are_not_read(length, message):
    async def script(conn):
        await conn.expect_setup()
        await conn.send(cut_text(b"", length=length))
        await conn.send_stream(16 * MB)
        await conn.stall()

    async def main():
        async with ScriptedServer(script) as server:
            with peak_memory() as peak:
                session, events, error, nread = await session_error(server)
            assert C.ENC_EXT_CLIPBOARD in server.connections[0].encodings
            assert type(error) is ProtocolError
            assert str(error).startswith(message), str(error)
            assert nread == CUT_HEADER
            assert peak[0] < MEMORY_BOUND, peak[0]
    run(main())


def test_cut_text_against_configured_limit():
    async def main():
        async with ScriptedServer(sends(cut_text(b"0123456789"), cut_text(b"0123456789!"))) as server:
            session, events, error, nread = await session_error(server, limits=Limits(max_cut_text=10))
            assert events == [CutText("0123456789")]
            assert type(error) is ProtocolError
            assert str(error) == "server sent cut text of 11 bytes (limit 10)"
            assert nread == CUT_HEADER + 10 + CUT_HEADER
    run(main())


# -- message types and hang-ups ----------------------------------------------------------------
@pytest.mark.parametrize("kind", [4, 77, 149, 255])
def test_unknown_server_message_type(kind):
    async def main():
        async with ScriptedServer(sends(bytes([kind]) + b"\x00" * 64)) as server:
            session, events, error, nread = await session_error(server)
            assert type(error) is ProtocolError
            assert str(error) == f"server sent unknown message type {kind}"
            assert nread == 1
    run(main())


@pytest.mark.parametrize("message, message_text", [
    (framebuffer_update(raw_rect(0, 0, 10, 10))[:FBU_HEADER + RECT_HEADER + 200],
     "server closed the connection (200 of 400 bytes read)"),
    (framebuffer_update(raw_rect(0, 0, 10, 10), count=2), "server closed the connection (0 of 12 bytes read)"),
    (cut_text(b"hello world")[:CUT_HEADER + 5], "server closed the connection (5 of 11 bytes read)"),
    (bytes([C.S_FB_UPDATE, 0, 0]), "server closed the connection (1 of 2 bytes read)"),
], ids=["raw-pixels", "missing-rect", "cut-text", "update-header"])
def test_server_closing_mid_message(message, message_text):
    async def main():
        async with ScriptedServer(sends(bell(), message, close=True)) as server:
            session, events, error, _ = await session_error(server)
            assert [type(e).__name__ for e in events] == ["Bell"]
            assert type(error) is ServerClosed
            assert str(error) == message_text
    run(main())
