"""An RFB (RFC 6143) client session: handshake, framebuffer, server messages, input.

    session = await RFBSession.open(options)
    async for event in session.events():      # FrameUpdate, CutText, Bell
        ...                                   # session.framebuffer holds the pixels
    await session.key(keysym, down=True)

The framebuffer is a numpy array (height, width, 4) of bytes R, G, B, X. One update request
is always outstanding (or the server streams continuous updates where it offers them), so
the frame keeps itself current as long as events() is being consumed.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import constants as C
from .decoders import DECODERS, DecoderState
from .errors import ConnectFailed, ProtocolError, RFBError
from .security import Credentials, TLSOptions, negotiate
from .stream import Stream

# The pixel format we ask every server for: 32 bpp, depth 24, little-endian, true colour,
# red/green/blue at shifts 0/8/16, so that memory holds R, G, B, X bytes.
CLIENT_PIXEL_FORMAT = struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 0, 8, 16)

COMPRESSED_ENCODINGS = (C.ENC_TIGHT, C.ENC_ZRLE, C.ENC_TRLE, C.ENC_ZLIB, C.ENC_HEXTILE, C.ENC_RRE)
MAX_CURSOR_SIDE = 1024
MAX_NAME = 64 * 1024
MAX_SCREENS = 64


@dataclass
class Limits:
    """What a server may send before the session ends with a ProtocolError."""
    max_width: int = 16384
    max_height: int = 16384
    max_cut_text: int = 16 * 1024 * 1024


@dataclass
class SessionOptions:
    host: str = "127.0.0.1"
    port: int = 5900
    credentials: Credentials = field(default_factory=Credentials)
    tls: TLSOptions = field(default_factory=TLSOptions)
    timeout: float = 10.0                 # connect + handshake, seconds
    encodings: list[int] | None = None    # preference order; None: by where the server is
    allowed_security: set[str] | None = None
    limits: Limits = field(default_factory=Limits)
    continuous_updates: bool = True
    # Off only for benchmarks: TigerVNC answers a non-incremental request with a layout-only
    # reply while it is on, so full-frame refreshes need it off.
    extended_desktop_size: bool = True
    shared: bool = True
    jpeg_quality: int | None = 8          # Tight JPEG (0-9); None: lossless only
    compress_level: int | None = 2


@dataclass
class PixelFormat:
    bits_per_pixel: int
    depth: int
    big_endian: bool
    true_colour: bool
    max: tuple[int, int, int]
    shift: tuple[int, int, int]

    @classmethod
    def parse(cls, data: bytes) -> "PixelFormat":
        bpp, depth, be, tc, rmax, gmax, bmax, rs, gs, bs = struct.unpack(">BBBBHHHBBB3x", data)
        return cls(bpp, depth, bool(be), bool(tc), (rmax, gmax, bmax), (rs, gs, bs))

    def describe(self) -> str:
        if not self.true_colour:
            return f"{self.bits_per_pixel} bpp colour-mapped, depth {self.depth}"
        order = "big" if self.big_endian else "little"
        return (f"{self.bits_per_pixel} bpp, depth {self.depth}, {order}-endian, "
                f"max {self.max[0]}/{self.max[1]}/{self.max[2]}, shift {self.shift[0]}/{self.shift[1]}/{self.shift[2]}")


@dataclass
class ServerInfo:
    version: str                  # as the server announced it, e.g. "3.8" or "3.889"
    used_version: str             # what we speak
    security_offered: list[str]
    security_used: str
    name: str
    width: int
    height: int
    pixel_format: PixelFormat
    encodings_seen: set[str] = field(default_factory=set)
    continuous_updates: bool = False
    extended_clipboard: bool = False
    qemu_key_events: bool = False


@dataclass
class Cursor:
    """The pointer's shape (RGBA, numpy) and hotspot, and where it is on the desktop."""
    image: np.ndarray | None = None
    hotspot: tuple[int, int] = (0, 0)
    position: tuple[int, int] = (0, 0)


@dataclass
class FrameUpdate:
    rects: list[tuple[int, int, int, int]]  # damage (x, y, w, h), desktop pixels
    resized: bool = False
    cursor_changed: bool = False
    name_changed: bool = False


@dataclass
class CutText:
    text: str


@dataclass
class CutTextSent:
    """How cut_text() put text on the server's clipboard.

    utf8 without latin1: the server has the text exactly. latin1 without utf8: it has the
    Latin-1 version, `replaced` characters of it "?". Both: exact if the server application
    takes UTF-8 (libvncserver passes it on only to those that do), else the Latin-1 version.
    """
    utf8: bool          # sent as UTF-8 over Extended Clipboard
    latin1: bool        # sent as Latin-1 ClientCutText
    replaced: int = 0   # characters the Latin-1 copy carries as "?"


@dataclass
class Bell:
    pass


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_encodings(host: str) -> list[int]:
    if is_loopback(host):
        # Raw costs the server nothing and loopback bandwidth is free.
        order = [C.ENC_COPYRECT, C.ENC_RAW]
    else:
        order = [C.ENC_TIGHT, C.ENC_ZRLE, C.ENC_HEXTILE, C.ENC_ZLIB, C.ENC_TRLE, C.ENC_RRE,
                 C.ENC_COPYRECT, C.ENC_RAW]
    return [e for e in order if e in DECODERS]


class RFBSession:
    def __init__(self, stream: Stream, options: SessionOptions):
        self._stream = stream
        self.options = options
        self.info: ServerInfo | None = None
        self.framebuffer = np.zeros((0, 0, 4), np.uint8)
        self.cursor = Cursor()
        self._decoders = DecoderState()
        self._continuous = False
        self._closed = False
        self.updates_received = 0
        self.last_update_time = 0.0
        # Extended Clipboard: the server's caps (formats | actions), its limits for
        # unsolicited data per format bit, and the text we own on the clipboard, if any
        # (cut_text set it and the server has not announced anything newer since).
        self._clip_server_flags = 0
        self._clip_server_sizes: dict[int, int] = {}
        self._clip_local: str | None = None

    # -- opening ---------------------------------------------------------------------
    @classmethod
    async def open(cls, options: SessionOptions) -> "RFBSession":
        where = f"{options.host}:{options.port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(options.host, options.port, limit=1 << 20), options.timeout)
        except asyncio.TimeoutError:
            raise ConnectFailed(f"connecting to {where} timed out after {options.timeout:g} s") from None
        except ConnectionRefusedError:
            raise ConnectFailed(f"connection refused by {where}") from None
        except OSError as e:
            raise ConnectFailed(f"cannot connect to {where}: {e.strerror or e}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        session = cls(Stream(reader, writer), options)
        try:
            await asyncio.wait_for(session._handshake(), options.timeout)
        except asyncio.TimeoutError:
            session._stream.close()
            raise ConnectFailed(f"{where} did not complete the RFB handshake within {options.timeout:g} s") from None
        except BaseException:
            session._stream.close()
            raise
        return session

    async def _handshake(self) -> None:
        s, o = self._stream, self.options
        banner = await s.read(12)
        # int() alone would take " 3", "+3", "0_3" and "-08": only ASCII digits make a version.
        if not (banner.startswith(b"RFB ") and banner[7:8] == b"." and banner.endswith(b"\n")
                and banner[4:7].isdigit() and banner[8:11].isdigit()):
            raise ProtocolError(f"not an RFB server: it greeted with {banner[:12]!r}")
        try:
            major, minor = int(banner[4:7]), int(banner[8:11])
        except ValueError:
            raise ProtocolError(f"not an RFB server: it greeted with {banner!r}") from None
        if major != 3:
            raise ProtocolError(f"server speaks RFB {major}.{minor}, only 3.x exists")
        # 3.889 is Apple's 3.8; 3.4 and 3.6 are UltraVNC's 3.3 relatives.
        use_minor = 8 if minor >= 8 else 7 if minor == 7 else 3
        s.write(b"RFB 003.%03d\n" % use_minor)
        await s.drain()

        sec = await negotiate(s, use_minor, o.credentials, o.tls, o.host, o.allowed_security)

        s.write(bytes([1 if o.shared else 0]))
        await s.drain()
        width, height = await s.u16(), await s.u16()
        pixel_format = PixelFormat.parse(await s.read(16))
        name_length = await s.u32()
        if name_length > MAX_NAME:
            raise ProtocolError(f"server sent a desktop name of {name_length} bytes (limit {MAX_NAME})")
        name = (await s.read(name_length)).decode("utf-8", "replace")
        self._check_size(width, height)
        self.info = ServerInfo(version=f"{major}.{minor}", used_version=f"3.{use_minor}",
                               security_offered=sec.offered, security_used=sec.used,
                               name=name, width=width, height=height, pixel_format=pixel_format)
        self.framebuffer = np.zeros((height, width, 4), np.uint8)

        s.write(struct.pack(">Bxxx", C.C_SET_PIXEL_FORMAT) + CLIENT_PIXEL_FORMAT)
        encodings = self._encoding_list()
        s.write(struct.pack(f">BxH{len(encodings)}i", C.C_SET_ENCODINGS, len(encodings), *encodings))
        # One non-incremental request, then only incremental ones (see module docstring of
        # the vnc worker: TigerVNC answers later non-incremental ones with layout only).
        self._request_update(incremental=False)
        await s.drain()

    def _encoding_list(self) -> list[int]:
        o = self.options
        real = list(o.encodings) if o.encodings is not None else default_encodings(o.host)
        unknown = [e for e in real if e not in DECODERS]
        if unknown:
            raise ValueError(f"encodings not supported: {', '.join(C.encoding_name(e) for e in unknown)}")
        pseudo = [C.ENC_EXT_DESKTOP_SIZE] if o.extended_desktop_size else []
        pseudo += [C.ENC_DESKTOP_SIZE, C.ENC_CURSOR, C.ENC_POINTER_POS,
                  C.ENC_DESKTOP_NAME, C.ENC_FENCE, C.ENC_QEMU_EXT_KEY, C.ENC_EXT_CLIPBOARD]
        if o.continuous_updates:
            pseudo.append(C.ENC_CONTINUOUS_UPDATES)
        # LastRect only pays with compressed encodings; with Raw it halves TigerVNC's throughput.
        if any(e in COMPRESSED_ENCODINGS for e in real):
            pseudo.append(C.ENC_LAST_RECT)
        if C.ENC_TIGHT in real:
            if o.jpeg_quality is not None:
                pseudo.append(C.ENC_JPEG_QUALITY_0 + o.jpeg_quality)
            if o.compress_level is not None:
                pseudo.append(C.ENC_COMPRESS_LEVEL_0 + o.compress_level)
        return real + pseudo

    def _check_size(self, width: int, height: int) -> None:
        lim = self.options.limits
        if width > lim.max_width or height > lim.max_height:
            raise ProtocolError(f"server desktop is {width}x{height}, larger than the configured "
                                f"maximum {lim.max_width}x{lim.max_height}")

    # -- requests --------------------------------------------------------------------
    def _request_update(self, incremental: bool = True) -> None:
        h, w = self.framebuffer.shape[:2]
        self._stream.write(struct.pack(">BBHHHH", C.C_FB_UPDATE_REQUEST, int(incremental), 0, 0, w, h))

    async def request_refresh(self) -> None:
        """Ask for the whole frame again (after a suspected desync)."""
        self._request_update(incremental=False)
        await self._stream.drain()

    # -- server messages -------------------------------------------------------------
    async def events(self):
        """Yield FrameUpdate, CutText and Bell events until the session ends (RFBError)."""
        while not self._closed:
            event = await self._read_message()
            if event is not None:
                yield event

    async def _read_message(self):
        s = self._stream
        kind = await s.u8()
        if kind == C.S_FB_UPDATE:
            return await self._read_update()
        if kind == C.S_CUT_TEXT:
            return await self._read_cut_text()
        if kind == C.S_BELL:
            return Bell()
        if kind == C.S_SET_COLOUR_MAP:
            await s.read(1)
            _first, count = await s.u16(), await s.u16()
            await s.read(6 * count)  # we use true colour; a palette is of no use to us
            return None
        if kind == C.S_END_OF_CONTINUOUS_UPDATES:
            await self._on_end_of_continuous_updates()
            return None
        if kind == C.S_FENCE:
            await self._on_fence()
            return None
        raise ProtocolError(f"server sent unknown message type {kind}")

    async def _read_update(self) -> FrameUpdate:
        s = self._stream
        await s.read(1)
        count = await s.u16()
        update = FrameUpdate(rects=[])
        seen = self.info.encodings_seen
        for _ in range(count):
            x, y, w, h, encoding = struct.unpack(">HHHHi", await s.read(12))
            if encoding == C.ENC_LAST_RECT:
                seen.add("LastRect")
                break
            decoder = DECODERS.get(encoding)
            if decoder is not None:
                fb_h, fb_w = self.framebuffer.shape[:2]
                if x + w > fb_w or y + h > fb_h:
                    raise ProtocolError(f"server sent a {C.encoding_name(encoding)} rectangle {w}x{h}+{x}+{y} "
                                        f"outside the {fb_w}x{fb_h} framebuffer")
                seen.add(C.encoding_name(encoding))
                # Even an empty rectangle carries bytes in some encodings (CopyRect's source,
                # zlib lengths): the decoder must consume them to stay in step.
                await decoder(self._decoders, s, self.framebuffer, x, y, w, h)
                if w and h:
                    update.rects.append((x, y, w, h))
                continue
            await self._pseudo_rect(update, x, y, w, h, encoding)
        if not self._continuous:
            self._request_update()
            await s.drain()
        self.updates_received += 1
        self.last_update_time = time.monotonic()
        return update

    async def _pseudo_rect(self, update: FrameUpdate, x: int, y: int, w: int, h: int, encoding: int) -> None:
        s, seen = self._stream, self.info.encodings_seen
        if encoding == C.ENC_DESKTOP_SIZE:
            seen.add("DesktopSize")
            self._resize(w, h, update)
        elif encoding == C.ENC_EXT_DESKTOP_SIZE:
            seen.add("ExtendedDesktopSize")
            screens = await s.u8()
            await s.read(3)
            if screens > MAX_SCREENS:
                raise ProtocolError(f"server sent an ExtendedDesktopSize with {screens} screens (limit {MAX_SCREENS})")
            await s.read(16 * screens)
            reason, status = x, y
            if not (reason == 1 and status != 0):  # a refused request of ours changes nothing
                self._resize(w, h, update)
        elif encoding == C.ENC_CURSOR:
            seen.add("Cursor")
            if w > MAX_CURSOR_SIDE or h > MAX_CURSOR_SIDE:
                raise ProtocolError(f"server sent a {w}x{h} cursor (limit {MAX_CURSOR_SIDE})")
            pixels = np.frombuffer(await s.read(w * h * 4), np.uint8).reshape(h, w, 4).copy()
            row_bytes = (w + 7) // 8
            mask = np.frombuffer(await s.read(row_bytes * h), np.uint8).reshape(h, row_bytes)
            bits = np.unpackbits(mask, axis=1)[:, :w]
            pixels[:, :, 3] = bits * 255
            self.cursor.image = pixels
            self.cursor.hotspot = (x, y)
            update.cursor_changed = True
        elif encoding == C.ENC_POINTER_POS:
            seen.add("PointerPos")
            self.cursor.position = (x, y)
            update.cursor_changed = True
        elif encoding == C.ENC_DESKTOP_NAME:
            seen.add("DesktopName")
            length = await s.u32()
            if length > MAX_NAME:
                raise ProtocolError(f"server sent a desktop name of {length} bytes (limit {MAX_NAME})")
            self.info.name = (await s.read(length)).decode("utf-8", "replace")
            update.name_changed = True
        elif encoding == C.ENC_QEMU_EXT_KEY:
            seen.add("QEMUExtendedKeyEvent")
            self.info.qemu_key_events = True
        else:
            raise ProtocolError(f"server sent a rectangle in {C.encoding_name(encoding)}, "
                                "which we did not ask for")

    def _resize(self, width: int, height: int, update: FrameUpdate) -> None:
        self._check_size(width, height)
        old = self.framebuffer
        if old.shape[:2] != (height, width):
            self.framebuffer = np.zeros((height, width, 4), np.uint8)
            keep_h, keep_w = min(height, old.shape[0]), min(width, old.shape[1])
            self.framebuffer[:keep_h, :keep_w] = old[:keep_h, :keep_w]
        self.info.width, self.info.height = width, height
        update.resized = True
        update.rects.append((0, 0, width, height))
        if self._continuous:
            self._enable_continuous_updates()

    # -- clipboard -------------------------------------------------------------------
    # Plain ServerCutText/ClientCutText carry Latin-1. With the Extended Clipboard
    # pseudo-encoding (rfbproto) the same messages with a negative length carry a flags word
    # and one action: Caps (what each side accepts), Notify (new data exists), Request,
    # Provide (the data, zlib-compressed, text as NUL-terminated UTF-8 with CRLF line ends)
    # and Peek (asks for a Notify). Only the text format interests us.

    async def _read_cut_text(self) -> CutText | None:
        s = self._stream
        await s.read(3)
        length = await s.s32()
        if length < 0:
            return await self._read_extended_clipboard(-length)
        limit = self.options.limits.max_cut_text
        if length > limit:
            raise ProtocolError(f"server sent cut text of {length} bytes (limit {limit})")
        data = await s.read(length)
        self._clip_local = None  # the server's clipboard is newer than ours now
        return CutText(data.decode("latin-1"))

    async def _read_extended_clipboard(self, length: int) -> CutText | None:
        s = self._stream
        limit = _clipboard_wire_limit(self.options.limits.max_cut_text)
        if length < 4:
            raise ProtocolError(f"server sent an Extended Clipboard message of {length} bytes, "
                                "too short for its flags")
        if length > limit:
            raise ProtocolError(f"server sent an Extended Clipboard message of {length} bytes (limit {limit})")
        flags = await s.u32()
        body = await s.read(length - 4)
        action, formats = flags & C.CLIP_ACTION_MASK, flags & C.CLIP_FORMAT_MASK
        server = self._clip_server_flags
        event = None
        if action & C.CLIP_CAPS:
            self._on_clipboard_caps(flags, body)
        elif action == C.CLIP_PROVIDE:
            event = self._on_clipboard_provide(formats, body)
        elif action == C.CLIP_NOTIFY:
            self._clip_local = None
            # Fetch at once, so that CutText events keep following the server's clipboard.
            if formats & C.CLIP_TEXT and server & C.CLIP_REQUEST:
                self._write_clipboard(C.CLIP_REQUEST | C.CLIP_TEXT)
        elif action == C.CLIP_REQUEST:
            if formats & C.CLIP_TEXT and self._clip_local is not None and server & C.CLIP_PROVIDE:
                self._write_clipboard_text(self._clip_local)
        elif action == C.CLIP_PEEK:
            if server & C.CLIP_NOTIFY:
                self._write_clipboard(C.CLIP_NOTIFY | (C.CLIP_TEXT if self._clip_local is not None else 0))
        # Anything else (several actions at once, actions from the future) is ignored, as
        # rfbproto leaves room for new ones.
        await s.drain()
        return event

    def _on_clipboard_caps(self, flags: int, body: bytes) -> None:
        formats = [1 << i for i in range(16) if flags & (1 << i)]
        if len(body) < 4 * len(formats):
            raise ProtocolError(f"server sent Extended Clipboard caps for {len(formats)} formats "
                                f"with {len(body)} bytes of sizes")
        sizes = struct.unpack(f">{len(formats)}I", body[:4 * len(formats)])
        self._clip_server_flags = flags
        self._clip_server_sizes = dict(zip(formats, sizes))
        self.info.encodings_seen.add("ExtendedClipboard")
        self.info.extended_clipboard = bool(flags & C.CLIP_TEXT)
        # Ours: text only, every action, and 0 bytes unsolicited, so that the server always
        # Notifies first, as rfbproto recommends; we Request straight away.
        ours = C.CLIP_CAPS | C.CLIP_TEXT | C.CLIP_REQUEST | C.CLIP_PEEK | C.CLIP_NOTIFY | C.CLIP_PROVIDE
        self._write_clipboard(ours, struct.pack(">I", 0))

    def _on_clipboard_provide(self, formats: int, body: bytes) -> CutText | None:
        if not formats & C.CLIP_TEXT:
            return None  # only formats we never asked for
        limit = self.options.limits.max_cut_text
        # Each Provide is its own zlib stream of (u32 size, data) per format, lowest format
        # bit first, so text comes first. Inflate exactly the size word and then at most
        # `limit` bytes of text: whatever else the stream holds is never inflated.
        inflater = zlib.decompressobj()
        try:
            size_word = inflater.decompress(body, 4)
            if len(size_word) < 4:
                raise ProtocolError("server sent an Extended Clipboard Provide that ends before its text")
            (size,) = struct.unpack(">I", size_word)
            if size > limit:
                raise ProtocolError(f"server provided {size} bytes of clipboard text (limit {limit})")
            data = inflater.decompress(inflater.unconsumed_tail, size)
        except zlib.error as e:
            raise ProtocolError(f"server sent an Extended Clipboard Provide that does not inflate: {e}") from None
        if len(data) < size:
            raise ProtocolError(f"server provided {len(data)} of the {size} bytes of clipboard text it announced")
        self._clip_local = None
        text = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        return CutText(text.replace("\r\n", "\n"))

    def _write_clipboard(self, flags: int, payload: bytes = b"") -> None:
        self._stream.write(struct.pack(">BxxxiI", C.C_CUT_TEXT, -(4 + len(payload)), flags) + payload)

    def _write_clipboard_text(self, text: str) -> None:
        self._write_clipboard(C.CLIP_PROVIDE | C.CLIP_TEXT, _text_provide(text)[1])

    async def cut_text(self, text: str) -> CutTextSent:
        """Put `text` on the server's clipboard.

        Over Extended Clipboard it goes as UTF-8: we Notify, and Provide when the server
        Requests it (TigerVNC does once an X client pastes), or right away where the server's
        caps take unsolicited text of this size. Otherwise it goes as Latin-1, which cannot
        carry other characters: they are sent as "?" and counted in the result.

        libvncserver (0.9.14 on) takes Provide but not Notify, and advertises the extension
        for every application while handing UTF-8 only to those that asked for it; x11vnc
        0.9.16 did not. Such servers get the Latin-1 version first and the UTF-8 one after
        it, which wins where the application takes it.
        """
        server = self._clip_server_flags if self.info.extended_clipboard else 0
        size, stream = _text_provide(text) if server else (0, b"")
        notify = bool(server & C.CLIP_NOTIFY)
        # After a Notify the text waits for the server's Request (TigerVNC asks for 0 bytes
        # unsolicited, and ignores a Provide from a client that has not Notified). A Provide
        # goes straight away only where the server's caps take unsolicited text this long.
        provide = bool(server & C.CLIP_PROVIDE) and size <= self._clip_server_sizes.get(C.CLIP_TEXT, 0)
        latin1 = not notify
        replaced = 0
        if latin1:
            plain = text.replace("\r\n", "\n")  # plain cut text ends lines with LF alone
            replaced = sum(1 for ch in plain if ord(ch) > 0xFF)
            data = plain.encode("latin-1", "replace")
            self._stream.write(struct.pack(">BxxxI", C.C_CUT_TEXT, len(data)) + data)
        self._clip_local = text  # answers the server's Requests and Peeks from now on
        if notify:
            self._write_clipboard(C.CLIP_NOTIFY | C.CLIP_TEXT)
        if provide:
            self._write_clipboard(C.CLIP_PROVIDE | C.CLIP_TEXT, stream)
        await self._stream.drain()
        return CutTextSent(utf8=notify or provide, latin1=latin1, replaced=replaced)

    async def _on_end_of_continuous_updates(self) -> None:
        self.info.encodings_seen.add("ContinuousUpdates")
        if not self.info.continuous_updates and self.options.continuous_updates:
            # The first EndOfContinuousUpdates says the server supports them: switch on.
            self.info.continuous_updates = True
            self._continuous = True
            self._enable_continuous_updates()
            await self._stream.drain()
        else:
            self._continuous = False

    def _enable_continuous_updates(self) -> None:
        h, w = self.framebuffer.shape[:2]
        self._stream.write(struct.pack(">BBHHHH", C.C_ENABLE_CONTINUOUS_UPDATES, 1, 0, 0, w, h))

    async def _on_fence(self) -> None:
        s = self._stream
        await s.read(3)
        flags = await s.u32()
        length = await s.u8()
        if length > 64:
            raise ProtocolError(f"server sent a fence with {length} bytes of payload (limit 64)")
        payload = await s.read(length)
        self.info.encodings_seen.add("Fence")
        if flags & C.FENCE_REQUEST:
            # We handle messages strictly in order, so every flag is honoured by construction.
            reply = flags & C.FENCE_KNOWN_FLAGS
            s.write(struct.pack(">BxxxIB", C.C_FENCE, reply, len(payload)) + payload)
            await s.drain()

    # -- input -----------------------------------------------------------------------
    async def key(self, keysym: int, down: bool) -> None:
        self._stream.write(struct.pack(">BBxxI", C.C_KEY_EVENT, int(down), keysym))
        await self._stream.drain()

    async def qemu_key(self, keysym: int, keycode: int, down: bool) -> None:
        """Press or release a key by its XT scancode (QEMU Extended Key Event), so that the
        server's keymap, not ours, decides what it types. `keycode` is encoded as rfbproto
        says: one-byte scancodes as is (0x1e is the A key), E0-prefixed ones with the high
        bit set (E0 48, Up, is 0xc8). `keysym` may be 0 when unknown.

        A server that has not announced the extension gets a plain KeyEvent with `keysym`
        instead (rfbproto's fallback); with keysym 0 there is nothing to send (ValueError).
        """
        if not (0 < keycode <= 0xFFFFFFFF and 0 <= keysym <= 0xFFFFFFFF):
            raise ValueError(f"keycode {keycode:#x} / keysym {keysym:#x} out of range")
        if not self.info.qemu_key_events:
            if not keysym:
                raise ValueError("the server does not take QEMU key events (scancodes) and no keysym was given")
            await self.key(keysym, down)
            return
        self._stream.write(struct.pack(">BBHII", C.C_QEMU, C.QEMU_EXTENDED_KEY_EVENT, int(down), keysym, keycode))
        await self._stream.drain()

    async def pointer(self, x: int, y: int, buttons: int = 0) -> None:
        """Move the pointer to (x, y) with `buttons` held (bit 0 left, 1 middle, 2 right,
        3/4 wheel up/down, 5/6 wheel left/right)."""
        h, w = self.framebuffer.shape[:2]
        x = max(0, min(int(x), max(w - 1, 0)))
        y = max(0, min(int(y), max(h - 1, 0)))
        self._stream.write(struct.pack(">BBHH", C.C_POINTER_EVENT, buttons & 0xFF, x, y))
        self.cursor.position = (x, y)
        await self._stream.drain()

    async def close(self) -> None:
        self._closed = True
        self._stream.close()

    @property
    def bytes_read(self) -> int:
        return self._stream.bytes_read


@functools.lru_cache(maxsize=1)
def _text_provide(text: str) -> tuple[int, bytes]:
    """Text as a Provide carries it: (size, zlib stream of u32 size and data), the data
    UTF-8 with CRLF line ends and a terminating NUL, which the size counts. Cached, so that
    a server Requesting the same text again and again costs one compression.

    The stream ends with a sync flush rather than being closed: libvncserver 0.9.14 drops
    the client when inflate reports the end of the stream (TigerVNC writes its own so too).
    """
    data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "replace") + b"\0"
    deflater = zlib.compressobj()
    stream = deflater.compress(struct.pack(">I", len(data)) + data) + deflater.flush(zlib.Z_SYNC_FLUSH)
    return len(data), stream


def _clipboard_wire_limit(max_text: int) -> int:
    """The most compressed bytes an Extended Clipboard message may take when its text is at
    most `max_text` bytes: zlib stores what it cannot shrink, at 5 bytes per 64 KiB block,
    plus header, size words and trailer."""
    return max_text + max_text // 1000 + 1024


async def open_session(options: SessionOptions) -> RFBSession:
    return await RFBSession.open(options)


__all__ = ["RFBSession", "SessionOptions", "Limits", "ServerInfo", "FrameUpdate", "CutText",
           "CutTextSent", "Bell", "Cursor", "RFBError", "open_session", "default_encodings"]
