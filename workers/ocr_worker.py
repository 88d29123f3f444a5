"""An OCR worker: line crops in, words with screen boxes out (see broker/wire.py, "Jobs").

Stateless and restartable. It connects a DEALER to the broker's job endpoint (the local
ipc:// socket, or `--connect tcp://HOST:PORT` with CURVE keys from `--keys DIR`), says
ready, and then reads one job at a time with one tesserocr API created at start.

Recognition runs in a thread of its own so that the main thread keeps heartbeating (to the
broker and to the supervisor) during a long job; the API object is only ever touched by
that thread (two threads on one API corrupt tesseract's heap). Tesseract releases the GIL
while it recognises, so the two threads do not slow each other down.

A worker that cannot start tesseract (no traineddata, unknown language) tells the broker
and the supervisor "OCR unavailable: ..." and exits with wire.EXIT_UNAVAILABLE, because a
restart would fail the same way.
"""
from __future__ import annotations

import os

# Both before numpy / tesserocr load: tesseract's OpenMP and the BLAS thread pools would
# otherwise spin on cores that the other OCR workers need.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import logging  # noqa: E402
import queue  # noqa: E402
import signal  # noqa: E402
import socket as socketlib  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from broker import wire  # noqa: E402
from broker.child import HEARTBEAT_INTERVAL, Heartbeat, die_with_parent  # noqa: E402
from workers import ocr_engine  # noqa: E402

log = logging.getLogger("vncmcp.ocr")

RECONNECT_FIRST = 0.25   # seconds before reconnecting after the broker went silent
RECONNECT_MAX = 8.0
MAX_JOB_PIXELS = 64 * 1024 * 1024


class JobError(ValueError):
    """The job itself is malformed: answered with an error, the worker carries on."""


def recognise(reader: ocr_engine.LineReader, lang: str, header: dict, pixels) -> list[list[dict]]:
    """Words of each line of one job, in screen coordinates."""
    if header.get("lang", lang) != lang:
        raise JobError(f"this worker reads {lang!r}, the job wants {header.get('lang')!r}")
    w, h, channels = int(header["w"]), int(header["h"]), int(header.get("channels", 1))
    if channels not in (1, 4) or w <= 0 or h <= 0 or w * h > MAX_JOB_PIXELS:
        raise JobError(f"bad crop {w}x{h}x{channels}")
    buf = np.frombuffer(pixels, np.uint8)
    if buf.size != w * h * channels:
        raise JobError(f"crop {w}x{h}x{channels} needs {w * h * channels} bytes, got {buf.size}")
    gray = buf.reshape(h, w) if channels == 1 else ocr_engine.to_gray(buf.reshape(h, w, 4))
    ox, oy = (int(v) for v in header.get("origin", (0, 0)))
    out = []
    for box in header["lines"]:
        x0, y0, x1, y1 = (int(v) for v in box)
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise JobError(f"line {box} is not inside the {w}x{h} crop")
        words = ocr_engine.read_line(reader, gray, (x0, y0, x1, y1))
        out.append([{"text": wd.text, "box": [wd.box[0] + ox, wd.box[1] + oy, wd.box[2] + ox, wd.box[3] + oy],
                     "conf": round(wd.conf, 1)} for wd in words])
    return out


class OcrWorker:
    def __init__(self, runtime_dir: str, endpoint: str, lang: str, keys_dir: str | None = None):
        self.runtime_dir = runtime_dir
        self.endpoint = endpoint
        self.lang = lang
        self.keys_dir = keys_dir
        self.ctx = zmq.Context.instance()
        self.test_hooks = os.environ.get(wire.TEST_HOOKS_ENV) == "1"
        self.error: str | None = None
        self.jobs_done = self.lines_read = self.job_errors = 0
        self.busy_ms = 0.0
        self.busy: int | None = None        # job_id being recognised
        self.glyphs = None                  # the reader's glyph table, once it exists
        self.glyphs_upto = 0                # the broker's relay seq of the last lines taken in
        self._stopping = False
        self._connections = 0
        self.beat = Heartbeat(runtime_dir, self.stats, ctx=self.ctx)

    def stats(self) -> dict:
        figures = {"lang": self.lang, "jobs": self.jobs_done, "lines": self.lines_read,
                   "job_errors": self.job_errors, "busy": self.busy is not None,
                   "mean_job_ms": round(self.busy_ms / self.jobs_done, 1) if self.jobs_done else None,
                   "broker": self.endpoint}
        if self.glyphs is not None:
            # lines spelled from learned terminal glyphs instead of read by Tesseract
            figures["lines_spelled"] = self.glyphs.decoded
            figures["lines_spelled_in_part"] = self.glyphs.partly   # Tesseract read the rest
            figures["glyph_shapes"] = len(self.glyphs)
            figures["glyph_lines_relayed"] = self.glyphs.absorbed   # learned by other workers
        if self.error:
            figures["error"] = self.error
        return figures

    # -- the broker connection ------------------------------------------------------------
    def _connect(self) -> zmq.Socket:
        self._connections += 1
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # A readable identity makes the broker's logs and status name the process.
        sock.setsockopt(zmq.IDENTITY, f"{socketlib.gethostname()}:{os.getpid()}:{self._connections}".encode())
        if self.endpoint.startswith("tcp://"):
            from broker import keys
            keys.apply_client(sock, self.keys_dir)
        sock.connect(self.endpoint)
        return sock

    def _send(self, sock: zmq.Socket, verb: bytes, body: dict) -> None:
        sock.send_multipart([verb, wire.pack(body)])

    def _ready_body(self) -> dict:
        body = {"pid": os.getpid(), "host": socketlib.gethostname(), "lang": self.lang}
        if self.glyphs_upto:
            body["glyphs_upto"] = self.glyphs_upto
        return body

    def report_unavailable(self, error: str) -> None:
        """Tell the broker and the supervisor why OCR cannot run here, then let them be."""
        self.error = error
        log.error("%s", error)
        # A few beats: the first may go before the heartbeat socket has connected, and the
        # supervisor should know why before it sees the exit status.
        for _ in range(3):
            self.beat.beat()
            time.sleep(0.2)
        try:
            sock = self._connect()
            self._send(sock, wire.W_UNAVAILABLE, {"error": error, **self._ready_body()})
            sock.close(linger=2000)  # long enough to deliver it to a broker that is there
        except (zmq.ZMQError, OSError, ValueError) as e:  # keys unreadable, endpoint wrong
            log.error("could not tell the broker: %s", e)

    # -- recognition thread ---------------------------------------------------------------
    def _recognition_thread(self, reader, jobs: queue.Queue, done_endpoint: str) -> None:
        done = self.ctx.socket(zmq.PAIR)
        done.connect(done_endpoint)
        while True:
            item = jobs.get()
            if item is None:
                break
            header, pixels = item
            started = time.perf_counter()
            test = header.get("test") or {}
            if self.test_hooks and test:
                if test.get("sleep_ms"):
                    time.sleep(float(test["sleep_ms"]) / 1000)
                if test.get("exit") is not None:
                    os._exit(int(test["exit"]))  # a poisoned job: the process dies mid-job
            if reader.glyphs is not None:
                try:
                    # What the other workers learned, relayed by the broker (wire.py, "Jobs"):
                    # only ever a speed-up, so a fault in it must not fail the job.
                    reader.glyphs.absorb(header.get("glyphs") or [])
                except Exception:
                    log.exception("relayed glyphs of job %s not taken", header.get("job_id"))
            try:
                lines = recognise(reader, self.lang, header, pixels)
                body = {"job_id": header["job_id"], "lines": lines,
                        "ms": round((time.perf_counter() - started) * 1000, 1)}
                shared = reader.glyphs.take_shared() if reader.glyphs is not None else []
                if shared:
                    body["glyphs"] = shared
                reply = (wire.W_RESULT, body)
            except (JobError, KeyError, TypeError, ValueError) as e:
                reply = (wire.W_ERROR, {"job_id": header.get("job_id"), "error": f"bad job: {e}"})
            except Exception as e:  # this thread must always answer, or the worker looks hung
                log.exception("job %s failed", header.get("job_id"))
                reply = (wire.W_ERROR, {"job_id": header.get("job_id"), "error": f"recognition failed: {e}"})
            done.send_multipart([reply[0], wire.pack(reply[1])])
        done.close()

    # -- main loop ------------------------------------------------------------------------
    def run(self) -> int:
        try:
            reader = ocr_engine.LineReader(lang=self.lang)
            reader.warm_up()
        except ocr_engine.OCRUnavailable as e:
            self.report_unavailable(str(e))
            return wire.EXIT_UNAVAILABLE
        self.glyphs = reader.glyphs

        done_endpoint = f"inproc://ocr-done-{id(self)}"
        done = self.ctx.socket(zmq.PAIR)
        done.bind(done_endpoint)
        jobs: queue.Queue = queue.Queue()
        thread = threading.Thread(target=self._recognition_thread, args=(reader, jobs, done_endpoint),
                                  name="recognise", daemon=True)
        thread.start()

        sock = self._connect()
        self._send(sock, wire.W_READY, self._ready_body())
        log.info("OCR worker ready (%s) on %s", self.lang, self.endpoint)
        heard = time.monotonic()
        next_beat = next_supervisor_beat = 0.0
        reconnect_delay = RECONNECT_FIRST
        ready_owed = False   # the broker asked us to introduce ourselves while we were busy
        interval = wire.WORKER_HEARTBEAT
        while not self._stopping:
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(done, zmq.POLLIN)
            events = dict(poller.poll(interval * 1000 / 2))
            now = time.monotonic()
            if sock in events:
                parts = sock.recv_multipart(copy=False)
                heard, reconnect_delay = now, RECONNECT_FIRST
                verb = parts[0].bytes
                if verb == wire.W_JOB:
                    header = wire.unpack(parts[1].bytes)
                    if self.busy is not None:
                        self._send(sock, wire.W_ERROR, {"job_id": header.get("job_id"), "error": "worker busy"})
                    else:
                        if isinstance(header.get("glyphs_upto"), int):
                            self.glyphs_upto = header["glyphs_upto"]
                        self.busy = header.get("job_id")
                        self.beat.busy_since = time.time()
                        jobs.put((header, parts[2].buffer if len(parts) > 2 else b""))
                elif verb == wire.W_RESET:
                    if self.busy is None:
                        self._send(sock, wire.W_READY, self._ready_body())
                    else:
                        ready_owed = True
            if done in events:
                verb, body = done.recv_multipart()
                result = wire.unpack(body)
                if verb == wire.W_RESULT:
                    self.jobs_done += 1
                    self.lines_read += len(result["lines"])
                    self.busy_ms += result["ms"]
                else:
                    self.job_errors += 1
                    log.warning("job %s: %s", result.get("job_id"), result.get("error"))
                sock.send_multipart([verb, body])
                self.busy = None
                self.beat.busy_since = None
                if ready_owed:
                    self._send(sock, wire.W_READY, self._ready_body())
                    ready_owed = False
            if now - heard > interval * wire.WORKER_LIVENESS:
                # The broker went away (or restarted and forgot us): a new socket, after a
                # pause that grows while it stays away, as the ZeroMQ guide's ppworker does.
                log.warning("no word from the broker for %.1f s; reconnecting in %.2f s", now - heard,
                            reconnect_delay)
                sock.close()
                time.sleep(reconnect_delay)
                reconnect_delay = min(reconnect_delay * 2, RECONNECT_MAX)
                sock = self._connect()
                if self.busy is None:
                    self._send(sock, wire.W_READY, self._ready_body())
                else:
                    ready_owed = True
                heard = time.monotonic()
            if now >= next_beat:
                self._send(sock, wire.W_HEARTBEAT, {"busy": self.busy})
                next_beat = now + interval
            if now >= next_supervisor_beat:
                self.beat.beat()
                next_supervisor_beat = now + HEARTBEAT_INTERVAL
        jobs.put(None)
        sock.close()
        done.close()
        self.beat.close()
        return 0

    def stop(self, *_):
        self._stopping = True


def main(cfg, args) -> int:
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s ocr[%(process)d] %(levelname)s %(message)s")
    endpoint = getattr(args, "connect", None) or wire.broker_endpoints(cfg.runtime_dir)[0]
    keys_dir = getattr(args, "keys", None) or cfg.keys_dir
    if endpoint.startswith("tcp://") and not keys_dir:
        print("vncmcp ocr-worker: a tcp:// broker needs CURVE keys: --keys DIR (from `vncmcp keygen`)",
              file=sys.stderr)
        return 2
    if endpoint.startswith("tcp://"):
        from broker import keys
        try:
            keys.client_keys(keys_dir)
        except keys.KeysError as e:
            print(f"vncmcp ocr-worker: {e}", file=sys.stderr)
            return 2
    worker = OcrWorker(cfg.runtime_dir, endpoint, cfg.ocr_lang, keys_dir)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    return worker.run()
