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

OCR broker, one per service (`broker.jobs`, `broker.ctl`, `broker.pub`):

  Jobs (ROUTER `broker.jobs`; also the `ocr_listen` tcp:// endpoint, always with CURVE).
  OCR workers connect a DEALER; the first frame is the verb (the ROUTER adds the identity).
  Worker -> broker:
    [b"ready", {pid, host, lang, glyphs_upto?}]
                                      once per connection: the worker is idle and known
    [b"hb", {busy: job_id | None}]    every WORKER_HEARTBEAT s, busy or not (recognition
                                      runs in its own thread); silence for WORKER_LIVENESS
                                      beats (or the socket's disconnect) means it is gone
    [b"result", {job_id, ms, lines: [[{text, box, conf}...] one list per job line], glyphs?}]
                                      boxes in SCREEN pixels [x0, y0, x1, y1], x1/y1 exclusive;
                                      glyphs: lines its glyph table learned since its last
                                      result ([[pitch, [[shape, char, top, conf, word]...]]...],
                                      workers/ocr_glyphs.py: take_shared)
    [b"error", {job_id, error}]       the job itself is bad (wrong size, wrong language)
    [b"unavailable", {error}]         "OCR unavailable: ..." (no traineddata, unknown
                                      language); the worker then exits with EXIT_UNAVAILABLE
  Broker -> worker:
    [b"job", {job_id, lines: [[x0,y0,x1,y1]...], origin: [x, y], lang, w, h, channels,
              glyphs?, glyphs_upto?, test?}, pixels]
                                      pixels: h*w*channels bytes, channels 1 (grey) or 4
                                      (R,G,B,X); line boxes in the crop's own pixels, and
                                      origin is where the crop's (0, 0) lies on the screen;
                                      glyphs: lines the OTHER workers learned, for the
                                      worker's own table (absorb) before it reads;
                                      glyphs_upto: the relay seq up to which this worker
                                      has now been sent the others' lines (its own, known by
                                      host and pid, are never sent), which it gives back in
                                      ready so that a reset or a new socket gets no line twice
    [b"hb", {}]                       every WORKER_HEARTBEAT s; a worker that hears nothing
                                      for WORKER_LIVENESS beats reconnects with a new socket
    [b"reset", {}]                    "I do not know you": send ready again
  A job that was on a worker that died or hung (no result by its attempt deadline) is
  queued again in front; one that was on two such workers is dropped and counted failed.
  `test` flags ({sleep_ms, exit}) are obeyed only by workers started with
  VNCMCP_TEST_HOOKS=1, so that tests can hang or kill a worker mid-job.

  Control (ROUTER `broker.ctl`), request [verb, body] -> reply [b"ok" | b"err", header]:
    b"ocr_snapshot" {desktop}         -> {desktop, epoch, seq, rev, w, h, lines}
    b"ocr_now" {desktop, region?: [x0,y0,x1,y1], timeout_ms, stale_ok?}
                                      -> {desktop, epoch, seq, rev, lines, stale}
                                      once the store is current for the frame seq the VNC
                                      worker had when the request came (its jobs go before
                                      background work); on the deadline an error, or with
                                      stale_ok the lines as they are and stale: true
    b"ocr_image" {w, h, channels, cache?: bool, timeout_ms?, test?} + pixels
                                      -> {lines, ms, line_count, failed: [{box, error}]}:
                                      any image through the same pipeline and worker pool
                                      (benchmarks, tests); an error if no line could be read
    b"status" {}                      -> {queue, queue_urgent, inflight, workers: [{id, pid,
                                          host, busy, jobs, up_s}], latency_ms: {p50, p95},
                                          cache: {hits, misses, entries}, jobs: {done,
                                          requeued, failed, expired, bad}, curve?: {accepted,
                                          denied}, error?: "OCR unavailable: ...", desktops:
                                          {name: {epoch, seq, rev, lines, passes, unchanged,
                                          pass_ms_p50, unchanged_ms_p50,
                                          damage_to_store_ms_p50, connected, error}}}
  A line is {text, box, conf, words: [{text, box, conf}], seq}: seq is the frame it was
  read from; the store as a whole is current up to its own seq.

  Store updates (PUB `broker.pub`), clone pattern sequenced by rev per desktop:
    [b"ocr", {desktop, rev, epoch, seq, reset, removed: [boxes], added: [lines]}]
  A mirror subscribes, asks for ocr_snapshot, then applies the updates with a greater rev
  in order (removed boxes first, then added lines); reset means start from empty; a gap
  in rev means ask for a new snapshot. Every pass publishes, so seq moves on even when no
  text changed.

Exit status: an OCR worker that cannot start tesseract exits with EXIT_UNAVAILABLE (78,
EX_CONFIG), which the supervisor marks FATAL instead of restarting it in a loop.
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

TOPIC_OCR = b"ocr"

# OCR worker <-> broker (see the docstring).
W_READY = b"ready"
W_HEARTBEAT = b"hb"
W_RESULT = b"result"
W_ERROR = b"error"
W_UNAVAILABLE = b"unavailable"
W_JOB = b"job"
W_RESET = b"reset"
WORKER_HEARTBEAT = 0.5      # seconds between heartbeats, both ways
WORKER_LIVENESS = 4         # beats of silence before the other side counts as gone

# EX_CONFIG: OCR cannot start here; restarting will not help (restart_policy owns the number).
from broker.restart_policy import EX_CONFIG as EXIT_UNAVAILABLE  # noqa: E402
TEST_HOOKS_ENV = "VNCMCP_TEST_HOOKS"

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


def broker_endpoints(runtime_dir: str) -> tuple[str, str, str]:
    """(jobs, ctl, pub) endpoints of the OCR broker."""
    return tuple(f"ipc://{os.path.join(runtime_dir, f'broker.{kind}')}" for kind in ("jobs", "ctl", "pub"))


def ipc_path(endpoint: str) -> str | None:
    """The socket file of an ipc:// endpoint (None for other transports)."""
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


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

    async def request(self, verb: bytes, body: dict | None = None, timeout: float = 5.0,
                      buffers: list | None = None) -> tuple[dict, list]:
        if self._socket is None:
            self._connect()
        await self._socket.send_multipart([b""] + request_parts(verb, body) + list(buffers or []))
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
