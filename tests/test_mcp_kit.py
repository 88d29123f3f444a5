"""Shared parts of the MCP frontend tests (no tests of its own): a real service on a real
Xvnc desktop, an in-memory MCP client session against the real frontend, and small
helpers for what X clients see (pointer position, selections, windows)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from broker import config
from broker.demo import Desktop, start_xvnc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "mcp-secret-pw-4711"
FONT = "10x20"   # a large bitmap font: OCR reads it reliably


def service_env(port: int, runtime_dir: str, password: str | None = PASSWORD, **extra) -> dict:
    env = dict(os.environ, VNCMCP_HOST="127.0.0.1", VNCMCP_PORT=str(port), VNCMCP_RUNTIME_DIR=runtime_dir,
               VNCMCP_OCR_WORKERS="1", PYTHONPATH=ROOT, **extra)
    env.pop("VNCMCP_CONFIG", None)
    if password:
        env["VNCMCP_PASSWORD"] = password
    else:
        env.pop("VNCMCP_PASSWORD", None)
    return env


@dataclass
class Service:
    """`vncmcp serve` (supervisor, VNC worker, OCR broker, one OCR worker) for one desktop."""
    desktop: Desktop
    runtime_dir: str
    env: dict
    proc: subprocess.Popen | None = None
    log_path: str = ""

    @property
    def cfg(self):
        return config.load(None, self.env)

    def start(self, timeout: float = 30) -> "Service":
        from broker.supervisor import ping
        self.log_path = os.path.join(tempfile.mkdtemp(prefix="vncmcp-service-log-"), "service.log")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "serve"], env=self.env, cwd=ROOT,
                                     stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = ping(self.runtime_dir)
            if answer and answer.get("ready"):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"the service did not become ready:\n{self.log()[-3000:]}")

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_service(geometry: str = "1024x768", password: str | None = PASSWORD) -> Service:
    desktop = start_xvnc(geometry=geometry, security="VncAuth" if password else "None", password=password)
    runtime_dir = tempfile.mkdtemp(prefix="vncmcp-mcp-test-")
    service = Service(desktop, runtime_dir, service_env(desktop.port, runtime_dir, password))
    try:
        return service.start()
    except Exception:
        service.stop()
        desktop.stop()
        raise


@dataclass
class Recorder:
    """Every tool result text seen by a test, to check afterwards (e.g. for the password)."""
    texts: list[str] = field(default_factory=list)


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


class Session:
    """An in-memory MCP client on a real Frontend (the same objects `vncmcp mcp` runs)."""

    def __init__(self, client, frontend, recorder: Recorder | None):
        self.client, self.fe, self.recorder = client, frontend, recorder

    async def call(self, tool: str, args: dict | None = None, ok: bool = True):
        result = await self.client.call_tool(tool, args or {})
        if self.recorder is not None:
            self.recorder.texts.append(text_of(result) + repr(result.structured_content))
        if ok:
            assert not result.is_error, f"{tool}({args}) failed: {text_of(result)}"
        return result

    async def error(self, tool: str, args: dict, *fragments: str) -> str:
        """Call a tool that must fail; its message must contain every fragment."""
        result = await self.call(tool, args, ok=False)
        message = text_of(result)
        assert result.is_error, f"{tool}({args}) should have failed, got: {message}"
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} not in {message!r}"
        return message


@contextlib.asynccontextmanager
async def session(cfg, recorder: Recorder | None = None, text_source=None, default_desktop=None, ready=True):
    from mcp import Client
    from mcp_frontend.desktops import Frontend
    from mcp_frontend.tools import build_server
    async with Frontend(cfg, text_source=text_source, default_desktop=default_desktop) as fe:
        if ready:
            assert await fe.wait_ready(15), "no first frame"
        async with Client(build_server(fe)) as client:
            yield Session(client, fe, recorder)


def run(coro, timeout: float = 120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# -- what X clients see ----------------------------------------------------------------------------
def pointer_position(desktop: Desktop) -> tuple[int, int]:
    out = desktop.run(["xdotool", "getmouselocation"], timeout=10).stdout.decode()
    m = re.search(r"x:(\d+) y:(\d+)", out)
    return int(m.group(1)), int(m.group(2))


async def x_selection(desktop: Desktop, selection: str = "primary") -> str:
    result = await asyncio.to_thread(desktop.run, ["xclip", "-o", "-selection", selection], timeout=10)
    return result.stdout.decode(errors="replace")


async def until(predicate, timeout: float = 10.0, step: float = 0.1):
    """Poll an X-side fact (the tests' own observation, not the product's waiting): the
    first truthy value of predicate(), which may return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(step)


async def selection_is(desktop: Desktop, text: str, selection: str = "primary") -> bool:
    return await x_selection(desktop, selection) == text


def window_geometry(desktop: Desktop, name: str) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the first window whose name matches, from xwininfo."""
    out = desktop.run(["xwininfo", "-name", name], timeout=10).stdout.decode()
    values = {k: int(v) for k, v in re.findall(r"(Absolute upper-left [XY]|Width|Height):\s+(-?\d+)", out)}
    return values["Absolute upper-left X"], values["Absolute upper-left Y"], values["Width"], values["Height"]


def wait_window(desktop: Desktop, name: str, timeout: float = 10.0) -> tuple[int, int, int, int]:
    """The window's geometry once it exists and has stopped changing (a window is created
    before the client gives it its final size and place)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            geometry = window_geometry(desktop, name)
            if geometry == last:
                return geometry
            last = geometry
        except KeyError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return last
        time.sleep(0.2)
