"""The MCP frontend's parts on their own: rectangles, text finding, input actions, image
fitting, argument-error wording, and the frame mirror's clone protocol against a scripted
worker on real ZeroMQ sockets (gaps, new epochs, disconnects, event-driven waits)."""
import asyncio
import io
import re
import tempfile
import time

import numpy as np
import pytest
import zmq
import zmq.asyncio
from PIL import Image
from pydantic import ValidationError

from broker import wire
from mcp_frontend import actions, images
from mcp_frontend.mirror import FrameMirror, diff_rects, merge_rects, rects_touch
from mcp_frontend.text import (Line, Word, compile_query, find, make_line, pick, plain_text, select)
from workers.rfb.keysyms import NAMED_KEYS


# -- rectangles ----------------------------------------------------------------------------------
def test_merge_rects_joins_neighbours_and_caps_the_count():
    assert merge_rects([(0, 0, 10, 10), (15, 0, 10, 10)], gap=8) == [(0, 0, 25, 10)]
    assert merge_rects([(0, 0, 10, 10), (100, 0, 10, 10)], gap=8) == [(0, 0, 10, 10), (100, 0, 10, 10)]
    many = [(i * 100, 0, 5, 5) for i in range(20)]
    merged = merge_rects(many, gap=0, limit=4)
    assert len(merged) <= 4
    for r in many:  # nothing lost: every rectangle lies inside some region
        assert any(m[0] <= r[0] and r[0] + r[2] <= m[0] + m[2] and m[1] <= r[1] and r[1] + r[3] <= m[1] + m[3]
                   for m in merged)
    assert merge_rects([(0, 0, 0, 5)]) == []


def test_rects_touch_and_diff_rects():
    assert rects_touch((0, 0, 10, 10), (9, 9, 5, 5))
    assert not rects_touch((0, 0, 10, 10), (10, 0, 5, 5))
    assert rects_touch((0, 0, 10, 10), (12, 0, 5, 5), gap=3)
    old = np.zeros((100, 130, 4), np.uint8)
    new = old.copy()
    new[40, 70] = (1, 2, 3, 0)
    assert diff_rects(old, new, tile=32) == [(64, 32, 32, 32)]
    new[99, 129, 0] = 9   # the ragged last tile is clipped to the frame
    assert (128, 96, 2, 4) in diff_rects(old, new, tile=32)
    only_padding = old.copy()
    only_padding[..., 3] = 255
    assert diff_rects(old, only_padding) == []
    assert diff_rects(old, np.zeros((10, 10, 4), np.uint8)) == [(0, 0, 10, 10)]


# -- text -----------------------------------------------------------------------------------------
def _line(*words_at):
    """words given as (text, x0) on one row y 10-20, 10 px per character."""
    return make_line([Word(t, (x, 10, x + 10 * len(t), 20), 90.0) for t, x in words_at])


def test_find_gives_the_box_of_exactly_the_matched_characters():
    line = _line(("File", 0), ("Save", 50), ("As...", 100))
    [m] = find([line], compile_query("save as", False))
    assert m.text == "Save As" and m.whole_word
    assert m.box == (50, 10, 120, 20)           # "Save" whole, "As" = 2 of 5 characters of "As..."
    assert m.click == (84, 14)
    [part] = find([line], compile_query("av", False))
    assert part.box == (60, 10, 80, 20) and not part.whole_word


def test_pick_prefers_the_only_whole_word_match():
    lines = [_line(("BOOK", 0)), _line(("OK", 200))]
    matches = find(lines, compile_query("ok", False))
    assert len(matches) == 2
    assert pick(matches).line == "OK"
    assert pick(find([_line(("OK", 0)), _line(("OK", 300))], compile_query("OK", False))) is None


def test_compile_query_errors_and_regex():
    with pytest.raises(ValueError, match="invalid regular expression"):
        compile_query("(", True)
    with pytest.raises(ValueError, match="empty"):
        compile_query("   ", False)
    assert compile_query("a.c", False).search("abc") is None       # literal, not a regex
    assert compile_query(r"\d+ items", True).search("12 items")


def test_select_and_plain_text():
    left = Line("left", (0, 0, 40, 10), 90, [Word("left", (0, 0, 40, 10), 90)])
    right = Line("right col", (300, 1, 390, 11), 90, [Word("right", (300, 1, 350, 11), 95),
                                                     Word("col", (360, 1, 390, 11), 20)])
    below = Line("below", (0, 30, 50, 40), 90, [Word("below", (0, 30, 50, 40), 90)])
    assert plain_text([below, right, left]) == "left    right col\nbelow"
    assert [l.text for l in select([left, right, below], min_confidence=50)] == ["left", "right", "below"]
    assert [l.text for l in select([left, right, below], region=(250, 0, 400, 20))] == ["right col"]


# -- input actions -------------------------------------------------------------------------------------
def test_click_actions_keep_held_buttons_and_wrap_modifiers():
    batch = actions.click(5, 6, "left", 2, held=4, modifiers=["ctrl"])
    ctrl = NAMED_KEYS["Control_L"]
    assert batch[0] == {"key": ctrl, "down": True} and batch[-1] == {"key": ctrl, "down": False}
    masks = [a["buttons"] for a in batch if "pointer" in a]
    assert masks == [4, 5, 4, 5, 4]
    with pytest.raises(actions.InputError, match="unknown modifier"):
        actions.click(0, 0, "left", 1, 0, ["hyper"])


def test_scroll_and_drag_actions():
    wheel = [a["buttons"] for a in actions.scroll(1, 1, "down", 2, 0, None) if "pointer" in a]
    assert wheel == [0, 16, 0, 16, 0]
    batch = actions.drag((0, 0), (120, 60), "left", 0, None)
    points = [a for a in batch if "pointer" in a]
    assert points[1] == {"pointer": [0, 0], "buttons": 1}
    assert points[-1] == {"pointer": [120, 60], "buttons": 0}
    assert len(points) == actions.DRAG_STEPS + 3    # moves in between, not one jump


def test_key_actions():
    ctrl, alt = NAMED_KEYS["Control_L"], NAMED_KEYS["Alt_L"]
    assert actions.press("ctrl+alt+t") == [
        {"key": ctrl, "down": True}, {"key": alt, "down": True}, {"key": ord("t"), "down": True},
        {"key": ord("t"), "down": False}, {"key": alt, "down": False}, {"key": ctrl, "down": False}]
    assert len(actions.press("ctrl+a BackSpace")) == 6
    for bad, message in (("", "empty"), ("ctrl+nosuchkey", "unknown key"), ("   ", "empty")):
        with pytest.raises(actions.InputError, match=message):
            actions.press(bad)
    held = actions.hold("shift", 300)
    assert held[1] == {"sleep_ms": 300}
    with pytest.raises(actions.InputError, match="one key or combination"):
        actions.hold("a b", 100)


def test_type_text_actions():
    typed = actions.type_text("Aé€\r\n")
    downs = [a["key"] for a in typed if a["down"]]
    assert downs == [ord("A"), 0xE9, 0x01000000 + 0x20AC, NAMED_KEYS["Return"]]
    with pytest.raises(actions.InputError, match="empty"):
        actions.type_text("")
    with pytest.raises(actions.InputError, match="character 2 .*U\\+0007"):
        actions.type_text("a\x07")


# -- images ------------------------------------------------------------------------------------------
def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_render_scales_to_the_limits_and_states_the_scale():
    frame = np.zeros((1080, 1920, 4), np.uint8)
    frame[500:520, 1000:1040] = (255, 0, 0, 0)
    shot = images.render(frame, (0, 0))
    assert (shot.width, shot.height) == (1280, 720) and shot.format == "png"
    img = np.asarray(_decode(shot.data).convert("RGB"))
    ys, xs = np.nonzero(img[:, :, 0] > 200)
    # the red block mapped back through the stated scale lands on the desktop block
    assert abs(xs.mean() / shot.scale - 1019.5) < 2 and abs(ys.mean() / shot.scale - 509.5) < 2
    small = images.render(frame[:100, :100], (0, 0))
    assert (small.width, small.height, small.scale) == (100, 100, 1.0)


def test_render_fits_the_byte_budget():
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (600, 800, 4), np.uint8)
    png_size = len(images.render(noise, (0, 0), max_bytes=10**8).data)
    shot = images.render(noise, (0, 0), max_bytes=200_000)
    assert png_size > 200_000 and len(shot.data) <= 200_000
    assert shot.format == "jpeg" and any("JPEG" in n for n in shot.notes)
    assert _decode(shot.data).format == "JPEG"
    # an explicit PNG keeps its format and shrinks instead
    png = images.render(noise, (0, 0), fmt="png", max_bytes=200_000)
    assert png.format == "png" and len(png.data) <= 200_000 and png.width < 800
    assert any("downscaled" in n for n in png.notes)
    webp = images.render(noise, (0, 0), fmt="webp", max_bytes=10**8)
    assert _decode(webp.data).format == "WEBP" and webp.mime == "image/webp"


def test_overlays_draw_grid_lines_and_numbered_marks():
    frame = np.full((400, 600, 4), 255, np.uint8)
    plain = np.asarray(_decode(images.render(frame, (100, 100)).data).convert("RGB"))
    assert (plain == 255).all()
    step = images.grid_step(600, 400)
    assert step in (50, 100)
    grid = np.asarray(_decode(images.render(frame, (100, 100), grid=step).data).convert("RGB"))
    magenta = (grid[:, :, 0] > 200) & (grid[:, :, 1] < 60) & (grid[:, :, 2] > 200)
    # desktop x = 200 is image column 100 (the region starts at desktop x = 100)
    assert magenta[:, 100].sum() > 300
    mark = images.Mark(1, "OK", (300, 300, 340, 320))
    marked = np.asarray(_decode(images.render(frame, (100, 100), marks=[mark]).data).convert("RGB"))
    red = (marked[:, :, 0] > 180) & (marked[:, :, 1] < 60) & (marked[:, :, 2] < 60)
    assert red[200, 200:240].any() and red[180:200, 200:230].any()   # box outline and its tag
    assert mark.center == (320, 310)


# -- argument errors ----------------------------------------------------------------------------------
def test_validation_errors_say_which_argument_and_what_is_allowed():
    from pydantic import BaseModel, Field
    from mcp_frontend.tools import describe_validation

    class Args(BaseModel):
        count: int = Field(ge=1, le=3)
        text: str = Field(max_length=5)

    with pytest.raises(ValidationError) as e:
        Args(count=7, text="x" * 80)
    message = describe_validation("click", e.value)
    assert "count: Input should be less than or equal to 3 (got 7)" in message
    assert "text: String should have at most 5 characters (got 80 characters)" in message


# -- the mirror against a scripted worker ---------------------------------------------------------------
class ScriptedWorker:
    """A PUB and a ROUTER like the VNC worker's, driven by the test."""

    def __init__(self, ctx, runtime_dir, w=64, h=48):
        self.pub_ep, self.ctl_ep = wire.vnc_endpoints(runtime_dir, "default")
        self.pub = ctx.socket(zmq.PUB)
        self.pub.bind(self.pub_ep)
        self.ctl = ctx.socket(zmq.ROUTER)
        self.ctl.bind(self.ctl_ep)
        self.frame = np.zeros((h, w, 4), np.uint8)
        self.epoch, self.seq, self.connected, self.since = 1, 0, True, time.time()
        self.snapshots = 0
        self.task = asyncio.create_task(self.serve())

    def state(self):
        return {"epoch": self.epoch, "seq": self.seq, "connected": self.connected, "since": self.since,
                "error": None if self.connected else "server closed", "name": "scripted", "server": "x:1",
                "w": self.frame.shape[1], "h": self.frame.shape[0]}

    async def serve(self):
        while True:
            *env, verb, body = await self.ctl.recv_multipart()
            if verb == b"snapshot" and self.connected:
                self.snapshots += 1
                reply = wire.ok_parts(self.state(), [self.frame.copy()])
            else:
                reply = wire.err_parts("desktop default is disconnected since 12:00:00, reconnecting")
            await self.ctl.send_multipart(env + reply)

    async def paint(self, x, y, w, h, value, publish=True):
        self.frame[y:y + h, x:x + w] = value
        self.seq += 1
        header = {"epoch": self.epoch, "seq": self.seq, "t": time.time(), "w": self.frame.shape[1],
                  "h": self.frame.shape[0], "rects": [[x, y, w, h]], "resized": False}
        if publish:
            await self.pub.send_multipart([wire.TOPIC_FRAME, wire.pack(header), self.frame[y:y + h, x:x + w].copy()])

    async def publish_state(self):
        await self.pub.send_multipart([wire.TOPIC_STATE, wire.pack(self.state())])

    def close(self):
        self.task.cancel()
        self.pub.close()
        self.ctl.close()


async def _until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_mirror_clone_protocol_gaps_epochs_and_disconnects():
    async def main():
        ctx = zmq.asyncio.Context()
        runtime_dir = tempfile.mkdtemp(prefix="vncmcp-mirror-")
        worker = ScriptedWorker(ctx, runtime_dir)
        mirror = FrameMirror(ctx, runtime_dir, "default")
        try:
            await mirror.start()
            assert await mirror.wait_first_frame(5)
            assert mirror.live and mirror.version == 1 and worker.snapshots == 1
            await asyncio.sleep(0.3)   # let the subscription reach the PUB (slow joiner)

            # sequenced updates are applied in place, each one a version with its damage
            v = mirror.version
            await worker.paint(1, 2, 3, 4, 7)
            assert await mirror.wait_change(v, 2)
            assert (mirror.frame[2:6, 1:4] == 7).all() and mirror.history[-1].rects == [(1, 2, 3, 4)]

            # a lost message: the next one does not follow, so the mirror takes a new snapshot
            # and reports only what differs from the frame it had
            await worker.paint(40, 40, 2, 2, 9, publish=False)
            await worker.paint(10, 10, 2, 2, 5)
            await _until(lambda: worker.snapshots == 2 and mirror.live and (mirror.frame[40, 40] == 9).all())
            assert (mirror.frame[10, 10] == 5).all()
            changed = [r for c in mirror.changes_since(v + 1)[0] for r in c.rects]
            assert all(r[0] < 64 and r[1] >= 0 for r in changed) and (32, 32, 32, 16) in changed

            # disconnected: the last frame stays, marked by the problem text
            worker.connected, worker.since = False, time.time()
            await worker.publish_state()
            await _until(lambda: not mirror.live)
            assert re.match(r"desktop default is disconnected since \d\d:\d\d:\d\d \(server closed\), reconnecting",
                            mirror.problem)
            assert mirror.frame is not None

            # reconnected as a new session (epoch): a new snapshot of the new size
            worker.connected, worker.epoch, worker.seq = True, 2, 0
            worker.frame = np.full((30, 40, 4), 3, np.uint8)
            await worker.publish_state()
            await _until(lambda: mirror.live and mirror.epoch == 2)
            assert mirror.size == (40, 30) and mirror.problem is None
            assert mirror.history[-1].rects == [(0, 0, 40, 30)]
        finally:
            await mirror.close()
            worker.close()
            ctx.term()
    asyncio.run(asyncio.wait_for(main(), 30))


def test_mirror_waits_are_event_driven():
    async def main():
        ctx = zmq.asyncio.Context()
        runtime_dir = tempfile.mkdtemp(prefix="vncmcp-mirror-")
        worker = ScriptedWorker(ctx, runtime_dir)
        mirror = FrameMirror(ctx, runtime_dir, "default")
        try:
            await mirror.start()
            assert await mirror.wait_first_frame(5)
            await asyncio.sleep(0.3)
            v = mirror.version

            async def paint_later():
                await asyncio.sleep(0.2)
                await worker.paint(0, 0, 1, 1, 1)
            t0 = time.monotonic()
            task = asyncio.create_task(paint_later())
            assert await mirror.wait_change(v, 5)
            assert 0.15 < time.monotonic() - t0 < 1.0     # woken by the frame, not by the timeout
            await task
            assert not await mirror.wait_change(mirror.version, 0.1)

            # quiet: changes every 50 ms for 0.5 s keep it waiting; then it settles
            async def busy():
                for _ in range(10):
                    await worker.paint(5, 5, 1, 1, np.random.randint(1, 255))
                    await asyncio.sleep(0.05)
            t0 = time.monotonic()
            task = asyncio.create_task(busy())
            assert await mirror.wait_quiet(0.2, 3)
            assert time.monotonic() - t0 > 0.6
            await task
            # ...unless the changes are outside the watched region
            task = asyncio.create_task(busy())
            t0 = time.monotonic()
            assert await mirror.wait_quiet(0.2, 3, region=(30, 30, 10, 10))
            assert time.monotonic() - t0 < 0.45
            await task
            # and a time limit bounds it when the screen never goes quiet
            task = asyncio.create_task(busy())
            assert not await mirror.wait_quiet(0.2, 0.3)
            await task
        finally:
            await mirror.close()
            worker.close()
            ctx.term()
    asyncio.run(asyncio.wait_for(main(), 30))


def test_mirror_without_a_worker_says_so():
    async def main():
        ctx = zmq.asyncio.Context()
        runtime_dir = tempfile.mkdtemp(prefix="vncmcp-mirror-")
        mirror = FrameMirror(ctx, runtime_dir, "lab")
        try:
            await mirror.start()
            assert not await mirror.wait_first_frame(0.3)
            assert not mirror.live
            assert "desktop lab: no VNC worker answers at ipc://" in mirror.problem
            assert "vncmcp service running" in mirror.problem
        finally:
            await mirror.close()
            ctx.term()
    asyncio.run(asyncio.wait_for(main(), 30))


def test_mirror_notices_a_silent_worker(monkeypatch):
    import mcp_frontend.mirror as mirror_module
    monkeypatch.setattr(mirror_module, "WORKER_SILENCE", 0.4)

    async def main():
        ctx = zmq.asyncio.Context()
        runtime_dir = tempfile.mkdtemp(prefix="vncmcp-mirror-")
        worker = ScriptedWorker(ctx, runtime_dir)
        mirror = FrameMirror(ctx, runtime_dir, "default")
        try:
            await mirror.start()
            assert await mirror.wait_first_frame(5) and mirror.live
            worker.close()          # a killed worker says nothing more
            await _until(lambda: not mirror.live, 3)
            assert re.match(r"desktop default: its VNC worker has been silent for \d+ s", mirror.problem)
        finally:
            await mirror.close()
            ctx.term()
    asyncio.run(asyncio.wait_for(main(), 30))


def test_server_arguments(capsys):
    import argparse
    from broker import config
    from mcp_frontend import server
    assert server.parse_http("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert server.parse_http("[::1]:9000") == ("::1", 9000)
    assert server.parse_http(":9000") == ("127.0.0.1", 9000)
    assert server.parse_http("localhost:9000") == ("localhost", 9000)
    for bad in ("8765", "host:", "host:99999", "host:http"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            server.parse_http(bad)
    for exposed in ("0.0.0.0:8765", "[::]:8765", "192.168.1.5:8765", "example.org:8765"):
        with pytest.raises(ValueError, match="loopback only"):
            server.parse_http(exposed)
    cfg = config.load(None, {"VNCMCP_HOST": "127.0.0.1", "VNCMCP_RUNTIME_DIR": tempfile.mkdtemp()})
    args = argparse.Namespace(http=None, desktop="attic", no_service=True)
    assert server.main(cfg, args) == 2
    assert "no desktop named 'attic'; configured: default" in capsys.readouterr().err
    assert server.main(cfg, argparse.Namespace(http="nowhere", desktop=None, no_service=True)) == 2
    assert "--http takes HOST:PORT" in capsys.readouterr().err
    # --host/--port given to `vncmcp mcp` reach the embedded service through the environment
    env = {"VNCMCP_PASSWORD": "from-env", "VNCMCP_HOST": "old"}
    config.apply_cli_overrides(argparse.Namespace(host="10.1.2.3", port=5901, username=None,
                                                  password_file="/run/pw", timeout=None), env)
    assert env == {"VNCMCP_HOST": "10.1.2.3", "VNCMCP_PORT": "5901", "VNCMCP_PASSWORD_FILE": "/run/pw"}
