"""A small RFB server for tests, scripted by the test.

It listens on 127.0.0.1 on an ephemeral port and, for every connection, runs a handshake
(by default the standard one: version, security, ServerInit) and then a script, a
coroutine the test supplies that writes whatever server messages it wants:

    async def script(conn):
        await conn.expect_setup()                       # SetPixelFormat, SetEncodings, request
        await conn.send(framebuffer_update(raw_rect(0, 0, 4, 4, colour=(255, 0, 0))))
        await conn.send(bell())
        await conn.wait_closed()

    async with ScriptedServer(script, security=[SEC_VNC_AUTH], password="secret") as server:
        session = await RFBSession.open(SessionOptions(port=server.port, ...))

What the server checks (VNC authentication, Apple Remote Desktop credentials) it checks
for real, with its own implementation of the algorithms, so that a test against it also
checks the client's. A test that needs a broken handshake passes `handshake=`, a coroutine
that replaces the standard one and may reuse its steps (`conn.version_handshake()`,
`conn.security_handshake()`, `conn.init_handshake()`) or send anything else.

When the script returns, the server half-closes (FIN after all it sent, so the client
reads everything and then sees ServerClosed) and waits for the client to hang up. Without
a script, the standard handshake waits for the client to hang up; a custom handshake that
returns ends the connection (it calls `conn.stall()` to keep it open instead).

Exceptions in a handshake or script, other than the client hanging up, are kept in
`server.errors` and raised again when the `async with` block ends, so a broken script
fails its test instead of passing silently.

Message builders (module functions) return bytes: `framebuffer_update`, `rect`, `raw_rect`,
`copy_rect`, `zlib_rect`, `desktop_size_rect`, `ext_desktop_size_rect`, `cut_text`, `bell`,
`server_init`, `failure_reason`. Each takes optional overrides of its length fields so that
tests can lie about sizes.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import struct
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from workers.rfb import constants as C

# 32 bpp, depth 24, little-endian, true colour, R/G/B at shifts 0/8/16: bytes R, G, B, X.
DEFAULT_PIXEL_FORMAT = struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 0, 8, 16)

# RFC 2409 section 6.2, the 1024-bit MODP group: a safe prime of 128 bytes, generator 2,
# the sizes Apple's screen sharing uses.
OAKLEY_GROUP_2_PRIME = bytes.fromhex(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22"
    "514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6"
    "F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381"
    "FFFFFFFFFFFFFFFF")
ARD_GENERATOR = 2

# The ways a client hangs up; a script that is writing or reading at that moment just ends.
HANGUP = (ConnectionError, asyncio.IncompleteReadError, BrokenPipeError)

Script = Callable[["Connection"], Awaitable[None]]


# -- message builders ------------------------------------------------------------------------
def rect(x: int, y: int, w: int, h: int, encoding: int, payload: bytes = b"") -> bytes:
    """A rectangle header (x, y, w, h, encoding) followed by `payload` as is."""
    return struct.pack(">HHHHi", x, y, w, h, encoding) + payload


def raw_rect(x: int, y: int, w: int, h: int, pixels: bytes | None = None,
             colour: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """A Raw rectangle in the default pixel format; `pixels` (w*h*4 bytes, R G B X) or one colour."""
    if pixels is None:
        pixels = bytes((*colour, 0)) * (w * h)
    return rect(x, y, w, h, C.ENC_RAW, pixels)


def copy_rect(x: int, y: int, w: int, h: int, src_x: int, src_y: int) -> bytes:
    return rect(x, y, w, h, C.ENC_COPYRECT, struct.pack(">HH", src_x, src_y))


def zlib_rect(x: int, y: int, w: int, h: int, compressed: bytes, length: int | None = None) -> bytes:
    """A ZLIB rectangle: u32 length, then `compressed` (one piece of the connection's zlib stream)."""
    return rect(x, y, w, h, C.ENC_ZLIB, struct.pack(">I", len(compressed) if length is None else length) + compressed)


def desktop_size_rect(width: int, height: int) -> bytes:
    return rect(0, 0, width, height, C.ENC_DESKTOP_SIZE)


def ext_desktop_size_rect(width: int, height: int, screens: int = 1, reason: int = 0, status: int = 0,
                          screen_count: int | None = None) -> bytes:
    """ExtendedDesktopSize: x is the reason, y the status; `screens` screens covering the desktop."""
    body = struct.pack(">Bxxx", screens if screen_count is None else screen_count)
    body += b"".join(struct.pack(">IHHHHI", i, 0, 0, width, height, 0) for i in range(screens))
    return rect(reason, status, width, height, C.ENC_EXT_DESKTOP_SIZE, body)


def framebuffer_update(*rects: bytes, count: int | None = None) -> bytes:
    """A FramebufferUpdate message; `count` overrides the number of rectangles announced."""
    return struct.pack(">BxH", C.S_FB_UPDATE, len(rects) if count is None else count) + b"".join(rects)


def cut_text(text: bytes, length: int | None = None) -> bytes:
    """ServerCutText; `length` (u32) overrides the announced length."""
    return struct.pack(">BxxxI", C.S_CUT_TEXT, len(text) if length is None else length) + text


def bell() -> bytes:
    return bytes([C.S_BELL])


def failure_reason(text: bytes, length: int | None = None) -> bytes:
    """A reason string as sent after a refused connection or a failed SecurityResult."""
    return struct.pack(">I", len(text) if length is None else length) + text


def server_init(width: int, height: int, name: bytes = b"scripted",
                pixel_format: bytes = DEFAULT_PIXEL_FORMAT, name_length: int | None = None) -> bytes:
    return (struct.pack(">HH", width, height) + pixel_format
            + struct.pack(">I", len(name) if name_length is None else name_length) + name)


# -- the algorithms the server checks, written independently of the client's ---------------
def _mirror_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def vnc_auth_expected(password: str, challenge: bytes) -> bytes:
    """What a client that knows `password` answers to `challenge`: DES-ECB, key = password
    (8 bytes, NUL-padded) with the bits of each byte reversed."""
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # cryptography < 43
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
    key = bytes(_mirror_bits(b) for b in password.encode("latin-1")[:8].ljust(8, b"\0"))
    encryptor = Cipher(TripleDES(key + key + key), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


def _nul_terminated(field64: bytes) -> str | None:
    end = field64.find(b"\0")
    return None if end < 0 else field64[:end].decode("utf-8", "replace")


# -- the server ------------------------------------------------------------------------------
@dataclass
class Connection:
    """One client connection, handed to the handshake and the script."""
    server: "ScriptedServer"
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    client_minor: int | None = None       # from the client's ProtocolVersion
    security_type: int | None = None      # what the client chose (or the 3.3 server imposed)
    shared: bool | None = None            # ClientInit
    authenticated_as: str | None = None   # ARD: the user name the client proved
    received_password: str | None = None  # ARD: what the client sent (the server can decrypt it)
    encodings: list[int] = field(default_factory=list)  # from SetEncodings
    bytes_sent: int = 0

    # raw I/O
    async def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("the connection is closed")
        self.writer.write(data)
        self.bytes_sent += len(data)
        await self.writer.drain()

    async def send_slowly(self, data: bytes, delay: float, chunk: int = 1) -> None:
        """Send `data` `chunk` bytes at a time, `delay` seconds apart (a slowloris)."""
        for i in range(0, len(data), chunk):
            await self.send(data[i:i + chunk])
            await asyncio.sleep(delay)

    async def send_stream(self, total: int, chunk: int = 64 * 1024, fill: bytes = b"A") -> int:
        """Send up to `total` bytes of filler until the client hangs up; return how many went out."""
        block = fill * (chunk // len(fill))
        sent = 0
        try:
            while sent < total:
                piece = block[:min(chunk, total - sent)]
                await self.send(piece)
                sent += len(piece)
        except HANGUP:
            pass
        return sent

    async def read(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def wait_closed(self) -> None:
        """Read and discard what the client sends until it hangs up."""
        try:
            while await self.reader.read(65536):
                pass
        except HANGUP:
            pass

    async def stall(self) -> None:
        """Say nothing more; return when the client hangs up."""
        await self.wait_closed()

    async def hang_up(self) -> None:
        """Close our side cleanly: FIN after everything sent (not a reset, which could make
        the client lose data it has not read yet), then wait for the client to close."""
        if self.writer.is_closing():
            return
        try:
            if self.writer.can_write_eof():
                self.writer.write_eof()
            await self.wait_closed()
        except (*HANGUP, OSError):
            pass

    # the standard handshake, step by step
    async def version_handshake(self) -> None:
        await self.send(self.server.banner)
        reply = await self.read(12)
        assert reply[:4] == b"RFB " and reply[-1:] == b"\n", f"client sent version {reply!r}"
        self.client_minor = int(reply[8:11])

    async def security_handshake(self) -> None:
        srv = self.server
        if self.client_minor == 3:
            self.security_type = srv.security[0]
            await self.send(struct.pack(">I", self.security_type))
        else:
            await self.send(bytes([len(srv.security), *srv.security]))
            self.security_type = (await self.read(1))[0]
            assert self.security_type in srv.security, f"client chose {self.security_type}, not offered"
        if self.security_type == C.SEC_NONE:
            ok = True
            if self.client_minor < 8:
                return  # no SecurityResult for None before 3.8
        elif self.security_type == C.SEC_VNC_AUTH:
            ok = await self._vnc_auth()
        elif self.security_type == C.SEC_ARD:
            ok = await self._ard()
        else:
            raise AssertionError(f"scripted server cannot do security type {self.security_type}")
        await self.send_security_result(ok)
        if not ok:
            await self.wait_closed()
            raise _AuthRefused

    async def send_security_result(self, ok: bool) -> None:
        if ok:
            await self.send(struct.pack(">I", 0))
        elif self.client_minor >= 8:
            await self.send(struct.pack(">I", 1) + failure_reason(self.server.failure_text(self)))
        else:
            await self.send(struct.pack(">I", 1))

    async def _vnc_auth(self) -> bool:
        challenge = os.urandom(16)
        await self.send(challenge)
        answer = await self.read(16)
        return self.server.password is not None and answer == vnc_auth_expected(self.server.password, challenge)

    async def _ard(self) -> bool:
        """Apple Remote Desktop (security type 30): Diffie-Hellman, then the client sends
        AES-128-ECB(MD5(shared secret)) of 64 bytes of user name and 64 bytes of password,
        each NUL-terminated, followed by its public key."""
        srv = self.server
        prime = srv.ard_prime
        key_len = len(prime)
        p = int.from_bytes(prime, "big")
        private = int.from_bytes(os.urandom(key_len), "big") % (p - 3) + 2
        public = pow(srv.ard_generator, private, p).to_bytes(key_len, "big")
        await self.send(struct.pack(">HH", srv.ard_generator, key_len) + prime + public)
        encrypted = await self.read(128)
        client_public = int.from_bytes(await self.read(key_len), "big")
        assert 1 < client_public < p - 1, "client sent a degenerate Diffie-Hellman public key"
        shared = pow(client_public, private, p).to_bytes(key_len, "big")
        decryptor = Cipher(algorithms.AES(hashlib.md5(shared).digest()), modes.ECB()).decryptor()
        plain = decryptor.update(encrypted) + decryptor.finalize()
        user, password = _nul_terminated(plain[:64]), _nul_terminated(plain[64:])
        self.received_password = password
        if user is not None and user == srv.username and password is not None and password == srv.password:
            self.authenticated_as = user
            return True
        return False

    async def init_handshake(self) -> None:
        srv = self.server
        self.shared = bool((await self.read(1))[0])
        await self.send(server_init(srv.width, srv.height, srv.name, srv.pixel_format))

    async def standard_handshake(self) -> None:
        await self.version_handshake()
        await self.security_handshake()
        await self.init_handshake()

    # what the client sends after the handshake
    async def read_client_message(self) -> tuple[int, tuple]:
        """One client message: (type, fields). Covers the messages our client sends."""
        kind = (await self.read(1))[0]
        if kind == C.C_SET_PIXEL_FORMAT:
            return kind, (await self.read(3 + 16),)
        if kind == C.C_SET_ENCODINGS:
            _, count = struct.unpack(">BH", await self.read(3))
            return kind, struct.unpack(f">{count}i", await self.read(4 * count))
        if kind == C.C_FB_UPDATE_REQUEST:
            return kind, struct.unpack(">BHHHH", await self.read(9))
        if kind == C.C_KEY_EVENT:
            return kind, struct.unpack(">BxxI", await self.read(7))
        if kind == C.C_POINTER_EVENT:
            return kind, struct.unpack(">BHH", await self.read(5))
        if kind == C.C_CUT_TEXT:
            (length,) = struct.unpack(">xxxI", await self.read(7))
            return kind, (await self.read(length),)
        if kind == C.C_ENABLE_CONTINUOUS_UPDATES:
            return kind, struct.unpack(">BHHHH", await self.read(9))
        if kind == C.C_FENCE:
            flags, length = struct.unpack(">xxxIB", await self.read(8))
            return kind, (flags, await self.read(length))
        raise AssertionError(f"scripted server cannot parse client message type {kind}")

    async def expect_setup(self) -> list[int]:
        """Read what the client sends right after ServerInit: SetPixelFormat, SetEncodings
        and its first FramebufferUpdateRequest. Returns (and keeps) the encodings."""
        kinds = []
        while C.C_FB_UPDATE_REQUEST not in kinds:
            kind, fields = await self.read_client_message()
            kinds.append(kind)
            if kind == C.C_SET_ENCODINGS:
                self.encodings = list(fields)
        assert kinds == [C.C_SET_PIXEL_FORMAT, C.C_SET_ENCODINGS, C.C_FB_UPDATE_REQUEST], kinds
        return self.encodings


class _AuthRefused(Exception):
    """The client failed authentication; the connection ends without running the script."""


class ScriptedServer:
    """An RFB server on 127.0.0.1:<ephemeral>. Use as `async with`; `port` is known inside."""

    def __init__(self, script: Script | None = None, *,
                 banner: bytes = b"RFB 003.008\n",
                 security: Sequence[int] = (C.SEC_NONE,),
                 username: str | None = None,
                 password: str | None = None,
                 failure: bytes | Callable[[Connection], bytes] = b"Authentication failed",
                 width: int = 64, height: int = 48, name: bytes = b"scripted",
                 pixel_format: bytes = DEFAULT_PIXEL_FORMAT,
                 ard_prime: bytes = OAKLEY_GROUP_2_PRIME, ard_generator: int = ARD_GENERATOR,
                 handshake: Script | None = None):
        self.script = script
        self.banner = banner
        self.security = list(security)
        self.username = username
        self.password = password
        self.failure = failure
        self.width, self.height, self.name = width, height, name
        self.pixel_format = pixel_format
        self.ard_prime, self.ard_generator = ard_prime, ard_generator
        self.handshake = handshake
        self.connections: list[Connection] = []
        self.errors: list[BaseException] = []
        self.port: int | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    def failure_text(self, conn: Connection) -> bytes:
        return self.failure(conn) if callable(self.failure) else self.failure

    async def __aenter__(self) -> "ScriptedServer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
        if exc[0] is None and self.errors:
            raise self.errors[0]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._tasks:  # scripts end once their client is gone; give them a moment
            _, pending = await asyncio.wait(self._tasks, timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for conn in self.connections:
            conn.writer.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())
        conn = Connection(self, reader, writer)
        self.connections.append(conn)
        try:
            await (self.handshake or Connection.standard_handshake)(conn)
            if self.script is not None:
                await self.script(conn)
            elif self.handshake is None:
                await conn.wait_closed()
            await conn.hang_up()
        except (_AuthRefused, *HANGUP):
            pass
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # noqa: BLE001 - reported when the test's `async with` ends
            self.errors.append(e)
        finally:
            writer.close()
