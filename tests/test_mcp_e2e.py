"""End to end: `vncmcp mcp` as a real stdio subprocess, driven by the mcp client library,
against a real 1080p Xvnc desktop. No service is running beforehand: the frontend starts
the embedded one (supervisor, VNC worker, OCR broker, OCR worker) for its lifetime and
stops it when the client goes. Also: the same frontend over Streamable HTTP."""
import asyncio
import base64
import io
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from broker.demo import free_tcp_port, start_xvnc, wait_for_port
from broker.supervisor import ping
from test_mcp_kit import (FONT, PASSWORD, ROOT, pointer_position, run, selection_is, service_env, start_service,
                          text_of, until, wait_window)


def image_of(result) -> tuple[bytes, Image.Image]:
    [image] = [c for c in result.content if c.type == "image"]
    data = base64.b64decode(image.data)
    img = Image.open(io.BytesIO(data))
    img.load()
    return data, img


def pids_of_service(runtime_dir: str) -> list[int]:
    """Processes whose environment names this runtime directory (the embedded service)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"VNCMCP_RUNTIME_DIR={runtime_dir}".encode() in f.read().split(b"\0"):
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def test_stdio_frontend_with_embedded_service():
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    desktop = start_xvnc(geometry="1920x1080", security="VncAuth", password=PASSWORD)
    runtime_dir = tempfile.mkdtemp(prefix="vncmcp-e2e-")
    env = service_env(desktop.port, runtime_dir)
    errlog_path = os.path.join(tempfile.mkdtemp(prefix="vncmcp-e2e-log-"), "mcp.stderr")
    desktop.xterm(geometry="100x12+0+0", font=FONT, command=["env", "PS1=$ ", "sh"], extra=["-T", "main"])
    marker = desktop.xterm(geometry="3x1+1500+900", font=FONT, extra=["-T", "marker", "-bg", "red", "-fg", "red"])
    wait_window(desktop, "main")
    mx, my, mw, mh = wait_window(desktop, "marker")
    assert ping(runtime_dir) is None, "no service may be running before the frontend starts"
    texts = []

    async def call(client, tool, args=None):
        result = await client.call_tool(tool, args or {})
        texts.append(text_of(result) + repr(result.structured_content))
        assert not result.is_error, f"{tool}: {text_of(result)}"
        return result

    async def main():
        params = StdioServerParameters(command=sys.executable, args=["-m", "broker.cli", "mcp"], env=env, cwd=ROOT)
        with open(errlog_path, "w") as errlog:
            async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=60) as client:
                assert ping(runtime_dir), "the frontend started the embedded service"
                # The first tool call waits for the first frame, still on its way just after
                # the embedded service came up.
                shot = await call(client, "screenshot", {"max_width": 64})
                assert not shot.structured_content["stale"]
                status = await call(client, "status")
                assert status.structured_content["desktops"][0]["connected"]

                # A default screenshot: within the budget, scaled, and the stated scale maps
                # a point of the image back to the desktop pixel a click then reaches.
                await call(client, "wait_for", {"stable": True, "timeout_ms": 5000})
                shot = await call(client, "screenshot")
                data, img = image_of(shot)
                meta = shot.structured_content
                assert len(data) <= 700_000 and len(base64.b64encode(data)) < 1_000_000
                assert img.size == (1280, 720) and abs(meta["scale"] - 2 / 3) < 1e-3
                assert (meta["desktop_width"], meta["desktop_height"]) == (1920, 1080)
                assert "1920x1080" in text_of(shot) and "scale 0.6667" in text_of(shot)
                a = np.asarray(img.convert("RGB")).astype(int)
                ys, xs = np.nonzero((a[:, :, 0] > 200) & (a[:, :, 1] < 50) & (a[:, :, 2] < 50))
                x, y = round(xs.mean() / meta["scale"]), round(ys.mean() / meta["scale"])
                await call(client, "click", {"x": x, "y": y})
                px, py = pointer_position(desktop)
                assert (px, py) == (x, y) and mx <= px < mx + mw and my <= py < my + mh

                # Type text and see it. (Each echo ends with an empty line: the OCR engine
                # merges a short line with the prompt and block cursor right under it.)
                await call(client, "move_mouse", {"x": 50, "y": 50})
                typed = await call(client, "type_text", {"text": "echo E2E typed $((6*7)) ok; echo\n"})
                assert "E2E typed 42 ok" in text_of(typed)
                read = await call(client, "read_text")
                assert any(l["text"] == "E2E typed 42 ok" for l in read.structured_content["lines"])

                # Wait for text a delayed command prints.
                await call(client, "type_text", {"text": "sleep 2; echo Delayed-$((40+2)); echo\n"})
                t0 = time.monotonic()
                waited = await call(client, "wait_for", {"text": "Delayed-42", "timeout_ms": 20000})
                assert waited.structured_content["met"] and 1.0 < time.monotonic() - t0 < 15

                # Click a real button by its label (OCR), and see its effect: xmessage exits
                # with the button's code.
                dialog = desktop.run_client(["xmessage", "-fn", FONT, "-geometry", "+900+500", "-buttons",
                                             "Continue:17", "End to end"])
                await asyncio.to_thread(wait_window, desktop, "xmessage")
                await call(client, "wait_for", {"text": "Continue", "timeout_ms": 10000})
                clicked = await call(client, "click", {"text": "Continue"})
                assert "on 'Continue'" in text_of(clicked)
                assert await asyncio.to_thread(dialog.wait, 10) == 17

                # Clipboard, both ways.
                await call(client, "set_clipboard", {"text": "e2e ✓ clipboard"})
                assert await until(lambda: selection_is(desktop, "e2e ✓ clipboard", "clipboard"), 10)
                owner = desktop.run_client(["xclip", "-quiet", "-i", "-selection", "clipboard"],
                                           stdin=subprocess.PIPE)
                owner.stdin.write("from the desktop ü".encode())
                owner.stdin.close()

                async def clip_arrived():
                    got = await call(client, "get_clipboard")
                    return got.structured_content["text"] == "from the desktop ü"
                assert await until(clip_arrived, 10)

                # A bad argument is a tool error, not a crash of the process.
                bad = await client.call_tool("click", {"x": 5000, "y": 1})
                assert bad.is_error and "outside the 1920x1080 desktop" in text_of(bad)
                assert (await call(client, "status")).structured_content["desktops"][0]["connected"]
        # The client is gone: the frontend stopped the service it started.
        stopped = await until(lambda: ping(runtime_dir) is None and not pids_of_service(runtime_dir), 15)
        assert stopped, f"left running: {pids_of_service(runtime_dir)}"

    try:
        run(main(), timeout=240)
    finally:
        for pid in pids_of_service(runtime_dir):
            os.kill(pid, 9)
        marker.terminate()
        desktop.stop()
    with open(errlog_path) as f:
        errlog = f.read()
    service_log = os.path.join(runtime_dir, "embedded-service.log")
    logs = errlog + (open(service_log).read() if os.path.exists(service_log) else "")
    assert PASSWORD not in logs and not [t for t in texts if PASSWORD in t]
    assert "Traceback" not in errlog, errlog[-3000:]


def test_streamable_http_frontend():
    from mcp import Client

    service = start_service(password=None)
    port = free_tcp_port()
    frontend = subprocess.Popen([sys.executable, "-m", "broker.cli", "mcp", "--no-service", "--http",
                                 f"127.0.0.1:{port}"], env=service.env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout=30, proc=frontend)

        async def main():
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                async def connected():
                    status = await client.call_tool("status", {})
                    return status.structured_content["desktops"][0]["connected"]
                assert await until(connected, 15)
                shot = await client.call_tool("screenshot", {"max_width": 512})
                assert not shot.is_error and image_of(shot)[1].size == (512, 384)
        run(main())
    finally:
        frontend.terminate()
        try:
            err = frontend.communicate(timeout=15)[1].decode(errors="replace")
        except subprocess.TimeoutExpired:
            frontend.kill()
            err = frontend.communicate()[1].decode(errors="replace")
        service.stop()
        service.desktop.stop()
    assert frontend.returncode == 0, err[-3000:]
