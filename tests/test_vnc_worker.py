"""The VNC worker as a real process: frames over real ZeroMQ sockets from a real Xvnc."""
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import zmq
import zmq.asyncio

from broker import wire
from broker.demo import start_xvnc
from workers.rfb.keysyms import char_keysym
from xshot import root_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FrameMirror:
    """Subscribe, snapshot, apply sequenced updates: the clone pattern a frontend uses."""

    def __init__(self, runtime_dir, desktop="default"):
        self.ctx = zmq.asyncio.Context()
        self.pub, self.ctl = wire.vnc_endpoints(runtime_dir, desktop)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(self.pub)
        self.req = wire.Requester(self.ctx, self.ctl)
        self.frame = None
        self.epoch = self.seq = None
        self.states = []
        self.clips = []
        self.updates = 0

    async def snapshot(self, timeout=10):
        deadline = time.monotonic() + timeout
        if self.frame is None:
            # ZeroMQ's slow joiner: the subscription reaches the PUB socket some time after
            # connect(), and frames published before that are not ours to miss. One message
            # waiting (the worker publishes its state every second) proves it has arrived;
            # from then on every frame after the snapshot must come through.
            await self.sub.poll(timeout * 1000)
        while True:
            try:
                header, buffers = await self.req.request(b"snapshot", timeout=2)
                break
            except wire.WireError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        self.frame = np.frombuffer(buffers[0], np.uint8).reshape(header["h"], header["w"], 4).copy()
        self.epoch, self.seq = header["epoch"], header["seq"]
        return header

    async def pump(self, seconds):
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not await self.sub.poll(left * 1000):
                break
            topic, header, *bufs = await self.sub.recv_multipart()
            header = wire.unpack(header)
            if topic == wire.TOPIC_STATE:
                self.states.append(header)
            elif topic == wire.TOPIC_CLIP:
                self.clips.append(header["text"])
            elif topic == wire.TOPIC_FRAME and self.frame is not None:
                if header["epoch"] != self.epoch:
                    await self.snapshot()
                    continue
                if header["seq"] <= self.seq:
                    continue
                assert header["seq"] == self.seq + 1, "a frame message was lost"
                if header["resized"]:
                    self.frame = np.zeros((header["h"], header["w"], 4), np.uint8)
                for (x, y, w, h), buf in zip(header["rects"], bufs):
                    self.frame[y:y + h, x:x + w] = np.frombuffer(buf, np.uint8).reshape(h, w, 4)
                self.seq = header["seq"]
                self.updates += 1

    def close(self):
        self.req.close()
        self.sub.close()
        self.ctx.term()


def start_worker(port, runtime_dir, password=None):
    env = dict(os.environ, VNCMCP_HOST="127.0.0.1", VNCMCP_PORT=str(port), VNCMCP_RUNTIME_DIR=runtime_dir,
               PYTHONPATH=ROOT)
    if password:
        env["VNCMCP_PASSWORD"] = password
    return subprocess.Popen([sys.executable, "-m", "broker.cli", "vnc-worker"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_worker_streams_frames_types_and_reconnects():
    runtime_dir = tempfile.mkdtemp(prefix="vncmcp-test-")
    desktop = start_xvnc(geometry="800x600", security="VncAuth", password="pw-for-worker")
    out_file = os.path.join(desktop.workdir, "typed.txt")
    desktop.xterm(geometry="80x10+0+0", command=["sh", "-c", f"stty -echo; cat > {out_file}"])
    worker = start_worker(desktop.port, runtime_dir, password="pw-for-worker")
    try:
        async def main():
            m = FrameMirror(runtime_dir)
            try:
                await m.snapshot()
                await m.pump(1.0)
                truth = await asyncio.to_thread(root_image, desktop.env)
                assert np.array_equal(m.frame[:, :, :3], truth)

                # Typing through the worker changes the mirrored frame (the xterm shows text).
                before = m.frame.copy()
                actions = []
                for ch in "hello worker\n":
                    k = char_keysym(ch)
                    actions += [{"key": k, "down": True}, {"key": k, "down": False}]
                await m.req.request(b"input", {"actions": [{"pointer": [100, 50], "buttons": 0}] + actions})
                await m.pump(1.0)
                assert m.updates > 0
                assert not np.array_equal(before, m.frame)
                truth = await asyncio.to_thread(root_image, desktop.env)
                assert np.array_equal(m.frame[:, :, :3], truth)

                status, _ = await m.req.request(b"status")
                assert status["connected"] and status["frames_published"] > 0
                assert "pw-for-worker" not in repr(status)
            finally:
                m.close()
        asyncio.run(asyncio.wait_for(main(), 60))
        deadline = time.time() + 5
        while time.time() < deadline and not (os.path.exists(out_file) and open(out_file).read()):
            time.sleep(0.1)
        assert open(out_file).read() == "hello worker\n"

        # Kill the server: the state says disconnected; restart it on the same port: reconnect.
        port, display = desktop.port, desktop.display
        desktop.stop()

        async def disconnected():
            m = FrameMirror(runtime_dir)
            try:
                await m.pump(2.5)
                assert m.states and not m.states[-1]["connected"]
                assert "pw-for-worker" not in repr(m.states)
                with pytest.raises(wire.WireError, match="disconnected since"):
                    await m.req.request(b"snapshot")
            finally:
                m.close()
        asyncio.run(asyncio.wait_for(disconnected(), 30))

        desktop = start_xvnc(geometry="640x480", security="VncAuth", password="pw-for-worker", port=port)

        async def reconnected():
            m = FrameMirror(runtime_dir)
            try:
                header = await m.snapshot(timeout=15)
                assert (header["w"], header["h"]) == (640, 480)
                assert header["connected"]
            finally:
                m.close()
        asyncio.run(asyncio.wait_for(reconnected(), 30))
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            output = worker.communicate(timeout=10)[0].decode()
        except subprocess.TimeoutExpired:
            worker.kill()
            output = worker.communicate()[0].decode()
        desktop.stop()
    assert worker.returncode == 0, output
    assert "pw-for-worker" not in output
    assert not [f for f in os.listdir(runtime_dir) if f.startswith("vnc-")], "socket files left behind"
