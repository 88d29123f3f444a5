"""`vncmcp serve`: the service in the foreground.

Current stage: starts the demo desktop when no VNC server is configured and runs the VNC
worker for the configured desktop. The supervisor (restarts, broker, OCR pool, systemd
notify) is issue 5's work.
"""
from __future__ import annotations

import os
import secrets
import sys

from broker import demo


def start_demo_desktop(desktop_cfg, runtime_dir: str) -> demo.Desktop:
    """A password-protected Xvnc with a terminal, on loopback, for trying vncmcp out."""
    password = secrets.token_urlsafe(9)[:8]  # VNC authentication uses 8 characters
    desktop = demo.start_xvnc(geometry="1280x800", security="VncAuth", password=password)
    desktop.xterm(geometry="100x30+40+40", command=["bash", "-l"], font="-misc-fixed-medium-r-normal--18-*-*-*-*-*-iso10646-1")
    os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
    pw_path = os.path.join(runtime_dir, "demo-password")
    with open(os.open(pw_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(password + "\n")
    desktop_cfg.host, desktop_cfg.port, desktop_cfg.password = "127.0.0.1", desktop.port, password
    print(f"vncmcp: demo desktop :{desktop.display} on 127.0.0.1:{desktop.port} "
          f"(VNC password in {pw_path})", file=sys.stderr, flush=True)
    return desktop


def run(cfg, desktop_cfg, args) -> int:
    from workers import vnc_worker
    demo_desktop = start_demo_desktop(desktop_cfg, cfg.runtime_dir) if desktop_cfg.demo else None
    try:
        return vnc_worker.main_for(desktop_cfg, cfg.runtime_dir)
    except KeyboardInterrupt:
        return 0
    finally:
        if demo_desktop:
            demo_desktop.stop()
