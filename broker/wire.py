"""The wire format between vncmcp processes (ZeroMQ multipart messages, msgpack headers).

Pixels never go inside msgpack: they travel as separate frames after the header so that
ZeroMQ can send them without a copy. Every local endpoint is an ipc:// socket in the
private runtime directory.

VNC worker, one per desktop (`vnc-<desktop>.pub`, `vnc-<desktop>.ctl`):

  PUB, topic frames first:
    [b"frame", header, pixels...]   header = {epoch, seq, t, w, h, rects: [[x,y,w,h]...],
                                              resized, cursor: {x, y} | absent}
                                    one pixels frame per rect: h*w*4 bytes R,G,B,X row-major
    [b"damage", header]             the same header as "frame", without pixels: for readers
                                    (the broker) that fetch only the crops they need
    [b"state", header]              connection state, on every change and once a second
                                    {epoch, seq, connected, since, error, name, w, h, server}
    [b"clip",  {epoch, text}]       the server's clipboard changed
    [b"bell",  {epoch}]

  ROUTER, request [verb, body] -> reply [b"ok" | b"err", header, buffers...]:
    b"snapshot" {}                   -> {epoch, seq, w, h, state...}, frame (h*w*4)
    b"crop"     {x, y, w, h}         -> {epoch, seq, x, y, w, h}, pixels
    b"input"    {actions: [...]}     -> {epoch, seq}; actions are {key, down} |
                                        {pointer: [x, y], buttons} | {cut_text}
    b"status"   {}                   -> state plus counters
    b"clipboard" {}                  -> {text}

A reader applies the snapshot, then every frame message of the same epoch whose seq is
greater (subscribe before asking for the snapshot, as in the ZeroMQ guide's clone pattern).
A new epoch means a new RFB session: take a new snapshot.
"""
from __future__ import annotations

import os

import msgpack
import zmq

TOPIC_FRAME = b"frame"
TOPIC_DAMAGE = b"damage"
TOPIC_STATE = b"state"
TOPIC_CLIP = b"clip"
TOPIC_BELL = b"bell"

OK = b"ok"
ERR = b"err"

# Below this size a buffer is copied into the message; above it ZeroMQ keeps a reference.
COPY_THRESHOLD = 64 * 1024


class WireError(RuntimeError):
    """The other side answered with an error, or not at all."""


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data) -> object:
    return msgpack.unpackb(bytes(data) if not isinstance(data, bytes) else data, raw=False)


def ensure_runtime_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def vnc_endpoints(runtime_dir: str, desktop: str) -> tuple[str, str]:
    """(pub, ctl) endpoints of one desktop's VNC worker."""
    base = os.path.join(runtime_dir, f"vnc-{desktop}")
    return f"ipc://{base}.pub", f"ipc://{base}.ctl"


def send_parts(socket: zmq.Socket, parts: list, **kw):
    """Send a multipart message: bytes as they are, large buffers without a copy."""
    big = any(not isinstance(p, bytes) and memoryview(p).nbytes >= COPY_THRESHOLD for p in parts)
    return socket.send_multipart(parts, copy=not big, **kw)


def request_parts(verb: bytes, body: dict | None = None) -> list:
    return [verb, pack(body or {})]


def ok_parts(header: dict, buffers: list | None = None) -> list:
    return [OK, pack(header)] + list(buffers or [])


def err_parts(message: str) -> list:
    return [ERR, pack({"error": message})]


def parse_reply(parts: list) -> tuple[dict, list]:
    status, header, buffers = parts[0], unpack(parts[1]), parts[2:]
    if bytes(status) == ERR:
        raise WireError(header.get("error", "unknown error"))
    return header, buffers


class Requester:
    """A DEALER that sends one request at a time and waits for its reply (asyncio)."""

    def __init__(self, ctx, endpoint: str):
        self._ctx = ctx
        self._endpoint = endpoint
        self._socket = None

    def _connect(self):
        self._socket = self._ctx.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(self._endpoint)

    async def request(self, verb: bytes, body: dict | None = None, timeout: float = 5.0) -> tuple[dict, list]:
        if self._socket is None:
            self._connect()
        await self._socket.send_multipart([b""] + request_parts(verb, body))
        if not await self._socket.poll(timeout * 1000):
            # A lost reply would pair the next request with the wrong answer: start over.
            self._socket.close()
            self._socket = None
            raise WireError(f"no reply to {verb.decode()} within {timeout:g} s")
        parts = await self._socket.recv_multipart(copy=False)
        return parse_reply([p.buffer for p in parts[1:]])

    def close(self):
        if self._socket is not None:
            self._socket.close()
            self._socket = None
