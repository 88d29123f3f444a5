"""Extended Clipboard and QEMU key events against a scripted server: the exact messages
the client sends, and what a hostile server cannot make it do (inflate without bound)."""
import asyncio
import struct
import tracemalloc
import zlib

import pytest

from rfbtools import Pump
from scripted_server import ScriptedServer, cut_text, framebuffer_update, rect
from workers.rfb import Limits, ProtocolError, RFBSession, SessionOptions
from workers.rfb import constants as C

MB = 1 << 20
ALL_ACTIONS = C.CLIP_REQUEST | C.CLIP_PEEK | C.CLIP_NOTIFY | C.CLIP_PROVIDE
TIGERVNC_CAPS = C.CLIP_CAPS | C.CLIP_TEXT | ALL_ACTIONS          # sizes: text 0
LIBVNCSERVER_CAPS = C.CLIP_CAPS | C.CLIP_TEXT | C.CLIP_REQUEST | C.CLIP_PEEK | C.CLIP_PROVIDE  # text 1 MiB


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ext_clip(flags: int, payload: bytes = b"") -> bytes:
    """A ServerCutText in the Extended Clipboard format (negative length)."""
    return struct.pack(">BxxxiI", C.S_CUT_TEXT, -(4 + len(payload)), flags) + payload


def provide(data: bytes, size: int | None = None) -> bytes:
    """Provide of text: zlib(u32 size, data); `size` overrides the announced size."""
    return ext_clip(C.CLIP_PROVIDE | C.CLIP_TEXT,
                    zlib.compress(struct.pack(">I", len(data) if size is None else size) + data))


async def client_message(conn) -> tuple:
    """The client's next message other than FramebufferUpdateRequest:
    ("cut", length, payload) with length signed, ("qemu", fields) or ("key", fields)."""
    while True:
        kind = (await conn.read(1))[0]
        if kind == C.C_FB_UPDATE_REQUEST:
            await conn.read(9)
        elif kind == C.C_CUT_TEXT:
            (length,) = struct.unpack(">xxxi", await conn.read(7))
            return "cut", length, await conn.read(abs(length))
        elif kind == C.C_QEMU:
            return "qemu", struct.unpack(">BHII", await conn.read(11))
        elif kind == C.C_KEY_EVENT:
            return "key", struct.unpack(">BxxI", await conn.read(7))
        else:
            raise AssertionError(f"unexpected client message type {kind}")


async def client_clip(conn) -> tuple[int, bytes]:
    """The client's next message, which must be an Extended Clipboard one: (flags, rest)."""
    kind, length, payload = await client_message(conn)
    assert kind == "cut" and length < 0, (kind, length, payload)
    (flags,) = struct.unpack(">I", payload[:4])
    return flags, payload[4:]


def inflate_text(body: bytes) -> tuple[bytes, bool]:
    """A Provide body the client sent: (text bytes as announced, whether the stream was closed)."""
    inflater = zlib.decompressobj()
    data = inflater.decompress(body)
    (size,) = struct.unpack(">I", data[:4])
    assert len(data) == 4 + size
    return data[4:], inflater.eof


async def with_session(script, body, **options):
    """Run `script` as the server and `body(session, pump)` as the client side."""
    async with ScriptedServer(script) as server:
        session = await RFBSession.open(SessionOptions(port=server.port, **options))
        pump = Pump(session)
        try:
            await body(session, pump)
        finally:
            await pump.close()


async def caps_exchange(conn, flags=TIGERVNC_CAPS, sizes=(0,)) -> None:
    await conn.expect_setup()
    assert C.ENC_EXT_CLIPBOARD in conn.encodings
    await conn.send(ext_clip(flags, struct.pack(f">{len(sizes)}I", *sizes)))
    ours, rest = await client_clip(conn)
    assert ours == C.CLIP_CAPS | C.CLIP_TEXT | ALL_ACTIONS
    assert rest == struct.pack(">I", 0)  # nothing unsolicited: Notify first, always


# -- receiving -------------------------------------------------------------------------------

def test_notify_is_requested_and_provide_becomes_cut_text():
    async def script(conn):
        await caps_exchange(conn)
        await conn.send(ext_clip(C.CLIP_NOTIFY | C.CLIP_TEXT))
        assert await client_clip(conn) == (C.CLIP_REQUEST | C.CLIP_TEXT, b"")
        await conn.send(provide("Grüße\r\n日本 ½\0".encode()))
        await conn.stall()

    async def body(session, pump):
        await pump.until(lambda: pump.cut_texts)
        assert pump.cut_texts == ["Grüße\n日本 ½"]
        assert session.info.extended_clipboard
        assert "ExtendedClipboard" in session.info.encodings_seen
    run(with_session(script, body))


def test_plain_cut_text_still_latin1_with_extended_clipboard():
    async def script(conn):
        await caps_exchange(conn)
        await conn.send(cut_text("café ½".encode("latin-1")))
        await conn.stall()

    async def body(session, pump):
        await pump.until(lambda: pump.cut_texts)
        assert pump.cut_texts == ["café ½"]
    run(with_session(script, body))


@pytest.mark.parametrize("message, error", [
    (provide(b"x" * 2000), "server provided 2000 bytes of clipboard text (limit 1000)"),
    (provide(b"0123456789", size=1000), "server provided 10 of the 1000 bytes of clipboard text it announced"),
    (ext_clip(C.CLIP_PROVIDE | C.CLIP_TEXT, b"this is not zlib"), "server sent an Extended Clipboard Provide that does not inflate"),
    (ext_clip(C.CLIP_PROVIDE | C.CLIP_TEXT, zlib.compress(b"ab")), "server sent an Extended Clipboard Provide that ends before its text"),
    (ext_clip(C.CLIP_CAPS | C.CLIP_TEXT | (1 << 1) | C.CLIP_NOTIFY, struct.pack(">I", 0)),
     "server sent Extended Clipboard caps for 2 formats with 4 bytes of sizes"),
], ids=["over-limit", "truncated", "not-zlib", "no-size", "short-caps"])
def test_bad_extended_clipboard_messages_end_the_session(message, error):
    async def script(conn):
        await caps_exchange(conn)
        await conn.send(message)
        await conn.stall()

    async def body(session, pump):
        await asyncio.wait_for(pump.task, 10)  # the pump keeps the error; until() would raise it
        assert type(pump.error) is ProtocolError
        assert str(pump.error).startswith(error), str(pump.error)
        assert pump.cut_texts == []
    run(with_session(script, body, limits=Limits(max_cut_text=1000)))


def test_provide_that_inflates_far_beyond_its_text_is_not_inflated():
    """A small message whose zlib stream holds 16 bytes of text, then 256 MiB of zeros: the
    client inflates the text and stops there."""
    deflater = zlib.compressobj(9)
    bomb = deflater.compress(struct.pack(">I", 16) + b"sixteen bytes ok")
    zeros = bytes(MB)
    bomb += b"".join(deflater.compress(zeros) for _ in range(256)) + deflater.flush()
    assert len(bomb) < MB

    async def script(conn):
        await caps_exchange(conn)
        await conn.send(ext_clip(C.CLIP_PROVIDE | C.CLIP_TEXT, bomb))
        await conn.stall()

    async def body(session, pump):
        tracemalloc.start()
        try:
            await pump.until(lambda: pump.cut_texts)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert pump.cut_texts == ["sixteen bytes ok"]
        assert peak < 8 * MB, peak
        assert pump.error is None
    run(with_session(script, body))


# -- sending ---------------------------------------------------------------------------------

def test_cut_text_notifies_then_provides_on_request():
    text = "½ 日本\nzweite Zeile"

    async def script(conn):
        await caps_exchange(conn)
        assert await client_clip(conn) == (C.CLIP_NOTIFY | C.CLIP_TEXT, b"")
        await conn.send(ext_clip(C.CLIP_REQUEST | C.CLIP_TEXT))
        flags, body = await client_clip(conn)
        assert flags == C.CLIP_PROVIDE | C.CLIP_TEXT
        data, closed = inflate_text(body)
        assert data == "½ 日本\r\nzweite Zeile\0".encode()
        assert not closed  # sync-flushed, as libvncserver needs
        await conn.send(ext_clip(C.CLIP_PEEK))
        assert await client_clip(conn) == (C.CLIP_NOTIFY | C.CLIP_TEXT, b"")
        # The server's clipboard changes: ours is no longer the current one.
        await conn.send(ext_clip(C.CLIP_NOTIFY | C.CLIP_TEXT))
        assert await client_clip(conn) == (C.CLIP_REQUEST | C.CLIP_TEXT, b"")
        await conn.send(ext_clip(C.CLIP_REQUEST | C.CLIP_TEXT))  # nothing to provide now
        await conn.send(ext_clip(C.CLIP_PEEK))
        assert await client_clip(conn) == (C.CLIP_NOTIFY, b"")
        await conn.stall()

    async def body(session, pump):
        await pump.until(lambda: session.info.extended_clipboard)
        sent = await session.cut_text(text)
        assert (sent.utf8, sent.latin1, sent.replaced) == (True, False, 0)
        await asyncio.sleep(0.5)
        assert pump.error is None
    run(with_session(script, body))


def test_cut_text_provides_at_once_where_the_server_takes_it_unasked():
    async def script(conn):
        await caps_exchange(conn, sizes=(MB,))
        assert await client_clip(conn) == (C.CLIP_NOTIFY | C.CLIP_TEXT, b"")
        flags, body = await client_clip(conn)
        assert flags == C.CLIP_PROVIDE | C.CLIP_TEXT
        assert inflate_text(body)[0] == "日本\0".encode()
        await conn.stall()

    async def body(session, pump):
        await pump.until(lambda: session.info.extended_clipboard)
        assert (await session.cut_text("日本")).utf8
        await asyncio.sleep(0.3)
        assert pump.error is None
    run(with_session(script, body))


def test_cut_text_to_a_server_without_notify_goes_latin1_then_utf8():
    """libvncserver's caps: Provide (1 MiB unsolicited) but no Notify."""
    async def script(conn):
        await caps_exchange(conn, flags=LIBVNCSERVER_CAPS, sizes=(MB,))
        kind, length, payload = await client_message(conn)
        assert (kind, length, payload) == ("cut", 8, "Grüße ??".encode("latin-1"))
        flags, body = await client_clip(conn)
        assert flags == C.CLIP_PROVIDE | C.CLIP_TEXT
        assert inflate_text(body)[0] == "Grüße 日本\0".encode()
        await conn.stall()

    async def body(session, pump):
        await pump.until(lambda: session.info.extended_clipboard)
        sent = await session.cut_text("Grüße 日本")
        assert (sent.utf8, sent.latin1, sent.replaced) == (True, True, 2)
        await asyncio.sleep(0.3)
        assert pump.error is None
    run(with_session(script, body))


def test_cut_text_without_extended_clipboard_is_latin1_and_says_what_it_replaced():
    async def script(conn):
        await conn.expect_setup()
        assert await client_message(conn) == ("cut", 10, "Grüße ??\nx".encode("latin-1"))
        await conn.stall()

    async def body(session, pump):
        sent = await session.cut_text("Grüße 日本\r\nx")
        assert (sent.utf8, sent.latin1, sent.replaced) == (False, True, 2)
        assert not session.info.extended_clipboard
        await asyncio.sleep(0.3)
        assert pump.error is None
    run(with_session(script, body))


# -- QEMU Extended Key Event -----------------------------------------------------------------

def test_qemu_key_event_bytes():
    async def script(conn):
        await conn.expect_setup()
        await conn.send(framebuffer_update(rect(0, 0, 0, 0, C.ENC_QEMU_EXT_KEY)))
        assert await client_message(conn) == ("qemu", (0, 1, 0x61, 0x1E))
        assert await client_message(conn) == ("qemu", (0, 0, 0, 0xC8))
        await conn.stall()

    async def body(session, pump):
        await pump.until(lambda: session.info.qemu_key_events)
        await session.qemu_key(0x61, 0x1E, True)
        await session.qemu_key(0, 0xC8, False)  # E0 48, Up; keysym unknown
        with pytest.raises(ValueError):
            await session.qemu_key(0x61, 0, True)
        await asyncio.sleep(0.3)
        assert pump.error is None
    run(with_session(script, body))
