"""What every process the supervisor starts does: heartbeat, and die with its parent.

Heartbeats go to the supervisor's PULL socket (`supervisor.hb` in the runtime directory):

    [msgpack {name, pid, t, busy_since: float | None, stats: {...}}]

once per HEARTBEAT_INTERVAL. `stats` holds the process kind's own figures (fps, queue,
latency...), which `vncmcp stats` shows. Silence past the supervisor's hang limit, or
`busy_since` older than its busy limit (a recognition that never returns), gets the
process killed and restarted. A process started by hand (no VNCMCP_CHILD_NAME) sends
nothing.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import threading
import time
from typing import Callable

import zmq

from broker import wire

HEARTBEAT_INTERVAL = 1.0
FIRST_BEAT_WAIT_MS = 500     # the first beat waits this long for the socket to connect
CHILD_NAME_ENV = "VNCMCP_CHILD_NAME"
PR_SET_PDEATHSIG = 1


def heartbeat_endpoint(runtime_dir: str) -> str:
    return f"ipc://{os.path.join(runtime_dir, 'supervisor.hb')}"


def child_name() -> str | None:
    return os.environ.get(CHILD_NAME_ENV)


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM us when the supervisor dies (Linux), and check that it has
    not died already between fork and now."""
    if child_name() is None:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    expected = os.environ.get("VNCMCP_SUPERVISOR_PID")
    if expected and os.getppid() != int(expected):
        os._exit(1)


class Heartbeat:
    """Sends heartbeats with `stats()` from an asyncio task or from a thread."""

    def __init__(self, runtime_dir: str, stats: Callable[[], dict] | None = None,
                 ctx: zmq.Context | None = None):
        self.name = child_name()
        self.stats = stats or (lambda: {})
        self.busy_since: float | None = None
        self._socket = None
        self._delivered = False
        if self.name is not None:
            self._socket = (ctx or zmq.Context.instance()).socket(zmq.PUSH)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.setsockopt(zmq.SNDHWM, 4)
            self._socket.setsockopt(zmq.IMMEDIATE, 1)
            self._socket.connect(heartbeat_endpoint(runtime_dir))

    def beat(self) -> None:
        if self._socket is None:
            return
        try:
            stats = self.stats()
        except Exception as e:  # a broken figure must not stop the heartbeat
            stats = {"stats_error": str(e)}
        message = {"name": self.name, "pid": os.getpid(), "t": time.time(),
                   "busy_since": self.busy_since, "stats": stats}
        if not self._delivered:
            # Until the connection is up a NOBLOCK send is dropped (IMMEDIATE), and the
            # supervisor would see us RUNNING one interval late: a slower restart.
            self._socket.poll(FIRST_BEAT_WAIT_MS, zmq.POLLOUT)
        try:
            self._socket.send(wire.pack(message), zmq.NOBLOCK)
            self._delivered = True
        except zmq.Again:
            pass  # no supervisor listening right now: nothing to queue up

    async def run_async(self) -> None:
        while True:
            self.beat()
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    def start_thread(self) -> threading.Thread:
        def loop():
            while True:
                self.beat()
                time.sleep(HEARTBEAT_INTERVAL)
        thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
