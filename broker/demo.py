"""Local X desktops for the demo and for tests: TigerVNC's Xvnc (or Xvfb + x11vnc) on
loopback with real X clients inside.

Used by `vncmcp serve` / `vncmcp mcp` when no VNC server is configured (the demo desktop),
by the test suite and by the benchmarks, so that all three start desktops the same way.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

X_LOCK_DIR = Path("/tmp")


class DesktopError(RuntimeError):
    pass


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _display_free(n: int) -> bool:
    return not (X_LOCK_DIR / f".X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists()


def free_display(start: int = 40, end: int = 400) -> int:
    # Spread the search so that parallel test runs rarely race for the same number.
    span = end - start
    offset = (os.getpid() * 7) % span
    for i in range(span):
        n = start + (offset + i) % span
        if _display_free(n):
            return n
    raise DesktopError("no free X display number")


def wait_for_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise DesktopError(f"server exited with status {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise DesktopError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def wait_for_x(display: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    env = dict(os.environ, DISPLAY=f":{display}")
    while time.monotonic() < deadline:
        if subprocess.run(["xdpyinfo"] if shutil.which("xdpyinfo") else ["xset", "q"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            return
        time.sleep(0.05)
    raise DesktopError(f"X display :{display} did not come up")


def make_vnc_password_file(password: str, directory: str) -> str:
    """A TigerVNC password file, written by TigerVNC's own vncpasswd."""
    path = os.path.join(directory, "passwd")
    out = subprocess.run(["vncpasswd", "-f"], input=(password + "\n" + password + "\n").encode(),
                         capture_output=True, check=True).stdout
    with open(path, "wb") as f:
        f.write(out)
    os.chmod(path, 0o600)
    return path


@dataclass
class Desktop:
    """A running X server reachable over VNC on 127.0.0.1:port."""
    display: int
    port: int
    kind: str                                  # "xvnc" or "x11vnc"
    workdir: str
    procs: list = field(default_factory=list)  # servers first, clients later
    clients: list = field(default_factory=list)

    @property
    def env(self) -> dict:
        return dict(os.environ, DISPLAY=f":{self.display}")

    def run_client(self, argv: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, **kw)
        self.clients.append(proc)
        return proc

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, capture_output=True, **kw)

    def xterm(self, geometry: str = "80x24+20+20", command: list[str] | None = None,
              font: str = "fixed", extra: list[str] | None = None) -> subprocess.Popen:
        argv = ["xterm", "-fn", font, "-geometry", geometry] + (extra or [])
        if command:
            argv += ["-e"] + command
        return self.run_client(argv)

    def stop(self) -> None:
        for proc in reversed(self.clients + self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.clients + self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Desktop":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_xvnc(geometry: str = "1280x800", security: str = "None", password: str | None = None,
               port: int | None = None, extra_args: list[str] | None = None,
               display: int | None = None) -> Desktop:
    """Start TigerVNC's Xvnc on loopback. `security` is Xvnc's -SecurityTypes value."""
    for attempt in range(5):
        n = display if display is not None else free_display()
        p = port or free_tcp_port()
        workdir = tempfile.mkdtemp(prefix="vncmcp-xvnc-")
        argv = ["Xvnc", f":{n}", "-geometry", geometry, "-depth", "24", "-rfbport", str(p),
                "-localhost", "-SecurityTypes", security, "-AlwaysShared", "-nolisten", "tcp",
                "-ac", "-Log", "*:stderr:30",
                # Xvnc counts every connection that has not authenticated yet (our own port
                # probe included) and locks loopback out after five: not useful here.
                "-UseBlacklist=0"]
        if password is not None:
            argv += ["-PasswordFile", make_vnc_password_file(password, workdir)]
        argv += extra_args or []
        log = open(os.path.join(workdir, "xvnc.log"), "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        desktop = Desktop(display=n, port=p, kind="xvnc", workdir=workdir, procs=[proc])
        try:
            wait_for_port(p, proc=proc)
            wait_for_x(n)
            return desktop
        except DesktopError:
            desktop.stop()
            if display is not None or attempt == 4:
                raise
    raise DesktopError("could not start Xvnc")


def start_x11vnc(geometry: str = "1280x800", password: str | None = None,
                 extra_args: list[str] | None = None) -> Desktop:
    """Start Xvfb with x11vnc serving it on loopback."""
    for attempt in range(5):
        n = free_display()
        p = free_tcp_port()
        workdir = tempfile.mkdtemp(prefix="vncmcp-x11vnc-")
        w, h = geometry.split("x")
        log = open(os.path.join(workdir, "server.log"), "wb")
        xvfb = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", f"{w}x{h}x24", "-nolisten", "tcp", "-ac"],
                                stdout=log, stderr=log, start_new_session=True)
        desktop = Desktop(display=n, port=p, kind="x11vnc", workdir=workdir, procs=[xvfb])
        try:
            wait_for_x(n)
            argv = ["x11vnc", "-display", f":{n}", "-rfbport", str(p), "-localhost", "-forever",
                    "-shared", "-noxdamage", "-nopw", "-quiet",
                    # Without a window manager x11vnc otherwise skips the clipboard for ~45 s.
                    "-env", "X11VNC_AVOID_WINDOWS=never"]
            if password is not None:
                pwfile = os.path.join(workdir, "x11vnc.pass")
                subprocess.run(["x11vnc", "-storepasswd", password, pwfile], capture_output=True, check=True)
                argv = [a for a in argv if a != "-nopw"] + ["-rfbauth", pwfile]
            argv += extra_args or []
            x11vnc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
            desktop.procs.append(x11vnc)
            wait_for_port(p, proc=x11vnc)
            return desktop
        except DesktopError:
            desktop.stop()
            if attempt == 4:
                raise
    raise DesktopError("could not start x11vnc")


def start_demo_desktop(runtime_dir: str) -> tuple[Desktop, str]:
    """The demo desktop for `vncmcp serve` with nothing configured: a password-protected
    Xvnc on loopback with a terminal. Returns it and the password file (mode 0600)."""
    import secrets
    password = secrets.token_urlsafe(9)[:8]  # VNC authentication uses 8 characters
    desktop = start_xvnc(geometry="1280x800", security="VncAuth", password=password)
    desktop.xterm(geometry="100x30+40+40", command=["bash", "-l"],
                  font="-misc-fixed-medium-r-normal--18-*-*-*-*-*-iso10646-1")
    path = os.path.join(runtime_dir, "demo-password")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(password + "\n")
    return desktop, path
