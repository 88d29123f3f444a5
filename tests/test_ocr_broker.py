"""The OCR broker and workers as real processes, started the way the supervisor starts
them (`python -m broker.cli VERB` with VNCMCP_* in the environment), against a real Xvnc
with an xterm in it, over real ZeroMQ sockets, with real tesseract, killed with real
signals."""
import asyncio
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest
import zmq
import zmq.asyncio

from broker import wire
from broker.demo import free_tcp_port, start_xvnc
from broker.ocr_client import OcrClient, OcrMirror
from workers.rfb.keysyms import char_keysym

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FONT_W, FONT_H = 10, 20       # xterm -fn 10x20
TEXT_X0, TEXT_Y0 = 3, 3       # window border (1) + xterm's internal border (2), at +0+0
SHOWN = ["Invoice 4821 was paid on Friday", "hello from the store"]


def cell_box(row: int, col0: int, col1: int) -> tuple[int, int, int, int]:
    """Where characters col0..col1-1 of text row `row` are drawn in the xterm."""
    return (TEXT_X0 + FONT_W * col0, TEXT_Y0 + FONT_H * row, TEXT_X0 + FONT_W * col1, TEXT_Y0 + FONT_H * (row + 1))


class Procs:
    """Child processes of one test service, each logging to a file in its runtime dir."""

    def __init__(self, **env):
        self.runtime_dir = tempfile.mkdtemp(prefix="vncmcp-ocr-test-")
        self.env = dict(os.environ, VNCMCP_RUNTIME_DIR=self.runtime_dir, PYTHONPATH=ROOT,
                        **{wire.TEST_HOOKS_ENV: "1"}, **env)
        self.procs: list[tuple[subprocess.Popen, str]] = []

    def start(self, *argv, env: dict | None = None) -> subprocess.Popen:
        log_path = os.path.join(self.runtime_dir, f"{argv[0]}-{len(self.procs)}.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "broker.cli", *argv], cwd=ROOT,
                                    env=dict(self.env, **(env or {})), stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((proc, log_path))
        return proc

    def log(self, proc) -> str:
        path = next(p for q, p in self.procs if q is proc)
        with open(path, errors="replace") as f:
            return f.read()

    def logs(self) -> str:
        return "\n".join(f"--- {path}\n{self.log(proc)}" for proc, path in self.procs)

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_status(client: OcrClient, predicate, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = await client.status()
            if predicate(last):
                return last
        except wire.WireError as e:
            last = str(e)
        await asyncio.sleep(0.1)
    raise AssertionError(f"status never matched; last: {last}")


_contexts: list = []


def new_context() -> zmq.asyncio.Context:
    """A context that is destroyed after the test, also when an assertion left sockets open
    (a context with open sockets would otherwise block at interpreter exit)."""
    ctx = zmq.asyncio.Context()
    _contexts.append(ctx)
    return ctx


@pytest.fixture(autouse=True)
def _destroy_contexts():
    yield
    while _contexts:
        _contexts.pop().destroy(linger=0)


def live_workers(status) -> list[int]:
    return [w["pid"] for w in status["workers"]]


@pytest.fixture(scope="module")
def service():
    desktop = start_xvnc(geometry="1024x768")
    script = "printf '" + "\\n".join(SHOWN) + "\\n'; exec cat"
    desktop.xterm(geometry="60x12+0+0", font="10x20", command=["sh", "-c", script])
    procs = Procs(VNCMCP_HOST="127.0.0.1", VNCMCP_PORT=str(desktop.port))
    procs.start("vnc-worker")
    procs.start("broker")
    workers = [procs.start("ocr-worker") for _ in range(2)]
    procs.workers = workers
    try:
        yield procs
    finally:
        procs.stop()
        desktop.stop()


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def start_workers(procs: Procs, client: OcrClient, count: int) -> None:
    """Bring the pool back to `count` workers, as the supervisor would after deaths."""
    status = await wait_status(client, lambda s: True)     # once the broker answers
    missing = count - len(status["workers"])
    procs.workers += [procs.start("ocr-worker") for _ in range(missing)]
    await wait_status(client, lambda s: len(s["workers"]) >= count)


def test_known_text_is_in_the_store_with_boxes_that_contain_it(service):
    async def main():
        client = OcrClient(new_context(), service.runtime_dir)
        await wait_status(client, lambda s: len(s["workers"]) == 2)
        answer = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            answer = await client.read("default", timeout=10)
            if all(any(s in line["text"] for line in answer["lines"]) for s in SHOWN):
                break
            await asyncio.sleep(0.3)   # the xterm may not have drawn yet
        texts = [line["text"] for line in answer["lines"]]
        for row, shown in enumerate(SHOWN):
            line = next(ln for ln in answer["lines"] if shown in ln["text"])
            col = 0
            for word in shown.split():
                found = next(w for w in line["words"] if w["text"] == word)
                x0, y0, x1, y1 = cell_box(row, col, col + len(word))
                cx, cy = (found["box"][0] + found["box"][2]) / 2, (found["box"][1] + found["box"][3]) / 2
                assert x0 <= cx < x1 and y0 <= cy < y1, (word, found["box"], (x0, y0, x1, y1))
                assert x0 - 2 <= found["box"][0] and found["box"][2] <= x1 + 2, (word, found["box"])
                col += len(word) + 1
            assert line["seq"] <= answer["seq"] and 0 < line["conf"] <= 100
        assert not answer["stale"] and answer["epoch"]
        # The store says the same as the snapshot, and a region narrows the answer.
        snap = await client.snapshot("default")
        assert [ln["text"] for ln in snap["lines"]] == texts and snap["rev"] >= 1
        region = cell_box(1, 0, 40)
        part = await client.read("default", region=region, timeout=5)
        assert [ln["text"] for ln in part["lines"]] == [t for t in texts if SHOWN[1] in t]
        with pytest.raises(wire.WireError, match="no desktop named 'nope'"):
            await client.read("nope")
        client.close()
    run(main())


def test_typed_text_appears_in_the_store_and_in_a_mirror(service):
    async def main():
        ctx = new_context()
        client = OcrClient(ctx, service.runtime_dir)
        await wait_status(client, lambda s: len(s["workers"]) >= 1)
        mirror = OcrMirror(client, "default")
        await mirror.start()
        vnc = wire.Requester(ctx, wire.vnc_endpoints(service.runtime_dir, "default")[1])
        typed = "typed words 77"
        actions = [{"pointer": [100, 30], "buttons": 0}]   # no window manager: focus follows the pointer
        for ch in typed:
            k = char_keysym(ch)
            actions += [{"key": k, "down": True}, {"key": k, "down": False}]
        await vnc.request(b"input", {"actions": actions})
        # The mirror sees the store's updates without asking.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(typed in ln["text"] for ln in mirror.sorted_lines()):
            await mirror.wait_changed(1.0)
        assert any(typed in ln["text"] for ln in mirror.sorted_lines()), [ln["text"] for ln in mirror.sorted_lines()]
        line = next(ln for ln in mirror.sorted_lines() if typed in ln["text"])
        assert line["box"][1] >= TEXT_Y0 + FONT_H * len(SHOWN) - 2   # on the row below the shown text
        # ocr_now agrees, and says which frame it is current for.
        answer = await client.read("default", timeout=5)
        assert any(typed in ln["text"] for ln in answer["lines"])
        status, _ = await vnc.request(b"status")
        assert answer["seq"] <= status["seq"]
        # Everything the mirror holds is what the broker holds.
        snap = await client.snapshot("default")
        await asyncio.sleep(0.3)
        assert sorted(map(tuple, (ln["box"] for ln in snap["lines"]))) == sorted(mirror.lines)
        await mirror.close()
        vnc.close()
        client.close()
    run(main())


async def xterm_crop(runtime_dir: str, ctx) -> tuple[bytes, int, int]:
    vnc = wire.Requester(ctx, wire.vnc_endpoints(runtime_dir, "default")[1])
    w, h = 400, 64
    header, buffers = await vnc.request(b"crop", {"x": 0, "y": 0, "w": w, "h": h})
    vnc.close()
    return bytes(buffers[0]), w, h


def test_what_one_worker_learned_reaches_the_other_and_reads_the_same(service):
    """The glyph relay between real worker processes: a terminal line one worker read
    with Tesseract teaches its glyph table, the broker passes that on with the other
    worker's next job (shapes as msgpack bytes), and reading goes on giving the same text."""
    async def main():
        ctx = new_context()
        client = OcrClient(ctx, service.runtime_dir)
        await start_workers(service, client, 2)
        before = (await client.status())["glyph_lines"]
        pixels, w, h = await xterm_crop(service.runtime_dir, ctx)
        reads = []
        for _ in range(4):     # the pool alternates workers (longest idle first)
            result = await client.ocr_image(pixels, w, h, channels=4, cache=False)
            reads.append([ln["text"] for ln in result["lines"]])
        assert any(SHOWN[0] in t for t in reads[0]) and any(SHOWN[1] in t for t in reads[0]), reads[0]
        assert all(r == reads[0] for r in reads), reads
        after = (await client.status())["glyph_lines"]
        assert after["learned"] > before["learned"] and after["relayed"] > before["relayed"], (before, after)
        client.close()
    run(main())


def test_worker_killed_mid_job_the_result_still_arrives(service):
    async def main():
        ctx = new_context()
        client = OcrClient(ctx, service.runtime_dir)
        await start_workers(service, client, 2)
        before = (await client.status())["jobs"]["requeued"]
        pixels, w, h = await xterm_crop(service.runtime_dir, ctx)
        task = asyncio.create_task(client.ocr_image(pixels, w, h, channels=4, cache=False, test={"sleep_ms": 1500}))
        status = await wait_status(client, lambda s: any(wk["busy"] for wk in s["workers"]), timeout=10)
        victim = next(wk["pid"] for wk in status["workers"] if wk["busy"])
        os.kill(victim, signal.SIGKILL)
        result = await task
        texts = " / ".join(ln["text"] for ln in result["lines"])
        assert SHOWN[0] in texts and SHOWN[1] in texts, texts
        status = await client.status()
        assert status["jobs"]["requeued"] == before + 1
        assert victim not in live_workers(status)
        client.close()
    run(main())


def test_poisoned_job_is_dropped_after_two_workers_and_the_broker_goes_on(service):
    async def main():
        ctx = new_context()
        client = OcrClient(ctx, service.runtime_dir)
        await start_workers(service, client, 2)
        pids = live_workers(await client.status())
        failed_before = (await client.status())["jobs"]["failed"]
        pixels, w, h = await xterm_crop(service.runtime_dir, ctx)
        with pytest.raises(wire.WireError, match="dropped: 2 OCR workers died"):
            await client.ocr_image(pixels, w, h, channels=4, cache=False, test={"exit": 3})
        status = await client.status()
        assert status["jobs"]["failed"] == failed_before + 1
        assert not set(pids) & set(live_workers(status))
        dead = [p for p in service.workers if p.pid in pids]
        assert [p.wait(timeout=10) for p in dead] == [3, 3]
        # The broker still serves: new workers take new work.
        await start_workers(service, client, 2)
        result = await client.ocr_image(pixels, w, h, channels=4, cache=False)
        assert any(SHOWN[0] in ln["text"] for ln in result["lines"])
        answer = await client.read("default", timeout=10)
        assert any(SHOWN[1] in ln["text"] for ln in answer["lines"])
        client.close()
    run(main())


def test_missing_traineddata_says_ocr_unavailable_and_exits_78(tmp_path):
    from broker.child import heartbeat_endpoint
    empty = tmp_path / "tessdata"
    empty.mkdir()
    procs = Procs(VNCMCP_HOST="127.0.0.1", VNCMCP_PORT=str(free_tcp_port()))
    # Stand in for the supervisor's heartbeat socket.
    hb_ctx = zmq.Context()
    heartbeats = hb_ctx.socket(zmq.PULL)
    heartbeats.bind(heartbeat_endpoint(procs.runtime_dir))
    try:
        procs.start("broker", env={"VNCMCP_CHILD_NAME": "broker"})
        worker = procs.start("ocr-worker", env={"TESSDATA_PREFIX": str(empty), "VNCMCP_CHILD_NAME": "ocr-1"})
        assert worker.wait(timeout=60) == wire.EXIT_UNAVAILABLE, procs.logs()
        assert "no traineddata for eng" in procs.log(worker)
        seen = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not ("ocr-1" in seen and "error" in seen.get("broker", {})):
            if heartbeats.poll(500):
                beat = wire.unpack(heartbeats.recv())
                seen[beat["name"]] = beat["stats"]
        assert seen["ocr-1"]["error"].startswith("OCR unavailable: no traineddata for eng")
        assert seen["broker"]["error"].startswith("OCR unavailable") and seen["broker"]["workers"] == 0
        assert {"queue", "inflight", "latency_ms", "cache", "jobs"} <= set(seen["broker"])

        async def main():
            client = OcrClient(new_context(), procs.runtime_dir)
            status = await wait_status(client, lambda s: "error" in s)
            assert status["error"].startswith("OCR unavailable: no traineddata for eng")
            with pytest.raises(wire.WireError, match="^OCR unavailable: no traineddata"):
                await client.read("default", timeout=2)
            client.close()
        run(main())
    finally:
        procs.stop()
        heartbeats.close()
        hb_ctx.term()


def test_workers_come_back_to_a_restarted_broker():
    procs = Procs(VNCMCP_HOST="127.0.0.1", VNCMCP_PORT=str(free_tcp_port()))
    try:
        broker = procs.start("broker")
        worker = procs.start("ocr-worker")

        async def main():
            client = OcrClient(new_context(), procs.runtime_dir)
            await wait_status(client, lambda s: worker.pid in live_workers(s))
            broker.send_signal(signal.SIGKILL)
            broker.wait(timeout=10)
            with pytest.raises(wire.WireError, match="OCR broker not running"):
                await client.status()
            procs.start("broker")
            await wait_status(client, lambda s: worker.pid in live_workers(s), timeout=20)
            pixels, w, h = render_text("back again 4821")
            result = await client.ocr_image(pixels, w, h)
            assert "back again 4821" in " ".join(ln["text"] for ln in result["lines"])
            client.close()
        run(main())
        assert worker.poll() is None
    finally:
        procs.stop()


def test_client_says_when_the_broker_is_not_running(tmp_path):
    async def main():
        client = OcrClient(new_context(), str(tmp_path))
        with pytest.raises(wire.WireError, match="OCR broker not running"):
            await client.read("default", timeout=1)
    run(main())


def render_text(text: str) -> tuple[bytes, int, int]:
    from PIL import Image, ImageDraw, ImageFont
    image = Image.new("L", (420, 60), 255)
    ImageDraw.Draw(image).text((10, 12), text, fill=0, font=ImageFont.load_default(size=28))
    return image.tobytes(), image.width, image.height


def test_curve_accepts_the_right_keys_and_refuses_others(tmp_path):
    keys, other = tmp_path / "keys", tmp_path / "other"
    for d in (keys, other):
        out = subprocess.run([sys.executable, "-m", "broker.cli", "keygen", str(d)], cwd=ROOT, capture_output=True,
                             text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
        assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(keys)) == ["client.public", "client.secret", "server.public", "server.secret"]
    for name in os.listdir(keys):
        assert stat.S_IMODE(os.stat(keys / name).st_mode) == 0o600
    again = subprocess.run([sys.executable, "-m", "broker.cli", "keygen", str(keys)], cwd=ROOT, capture_output=True,
                           text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert again.returncode == 1 and "already holds" in again.stderr
    # The impostor knows the server's public key but has its own client pair.
    (other / "server.public").write_bytes((keys / "server.public").read_bytes())

    port = free_tcp_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    procs = Procs(VNCMCP_HOST="127.0.0.1", VNCMCP_PORT=str(free_tcp_port()))
    remote = Procs()   # the workers' own runtime dir, as on another host
    try:
        # TCP without keys is refused outright.
        refused = procs.start("broker", env={"VNCMCP_OCR_LISTEN": endpoint})
        assert refused.wait(timeout=30) == 2
        assert "TCP without CURVE keys is refused" in procs.log(refused)
        no_keys = remote.start("ocr-worker", "--connect", endpoint)
        assert no_keys.wait(timeout=30) == 2 and "needs CURVE keys" in remote.log(no_keys)

        procs.start("broker", env={"VNCMCP_OCR_LISTEN": endpoint, "VNCMCP_KEYS_DIR": str(keys)})

        async def main():
            client = OcrClient(new_context(), procs.runtime_dir)
            await wait_status(client, lambda s: True)
            good = remote.start("ocr-worker", "--connect", endpoint, "--keys", str(keys))
            status = await wait_status(client, lambda s: good.pid in live_workers(s))
            assert status["curve"]["accepted"] >= 1
            pixels, w, h = render_text("CURVE accepted 4821")
            result = await client.ocr_image(pixels, w, h)
            assert "CURVE accepted 4821" in " ".join(ln["text"] for ln in result["lines"])

            bad = remote.start("ocr-worker", "--connect", endpoint, "--keys", str(other))
            status = await wait_status(client, lambda s: s["curve"]["denied"] >= 1)
            await asyncio.sleep(1.0)
            assert bad.pid not in live_workers(await client.status())
            assert bad.poll() is None   # it keeps trying; the operator sees the refusals
            client.close()
        run(main())
        for proc, _ in procs.procs + remote.procs:
            log = procs.log(proc) if (proc, _) in procs.procs else remote.log(proc)
            assert (keys / "client.secret").read_text().strip() not in log
            assert (keys / "server.secret").read_text().strip() not in log
    finally:
        remote.stop()
        procs.stop()
