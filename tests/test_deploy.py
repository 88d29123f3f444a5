"""The deployment files: systemd/vncmcp.service passes `systemd-analyze verify`, and the
service runs the way that unit starts it (its Environment=, LoadCredential=, RuntimeDirectory=,
Type=notify and WatchdogSec=, KillMode=mixed's SIGTERM), found by an operator and an MCP
frontend through $XDG_RUNTIME_DIR alone; the example config is valid, every commented key too."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from broker import config
from broker.demo import start_xvnc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(ROOT, "systemd", "vncmcp.service")
EXAMPLE = os.path.join(ROOT, "systemd", "vncmcp.toml.example")
VNCMCP = os.path.join(os.path.dirname(sys.executable), "vncmcp")  # the console script next to our python
PASSWORD = "unit-pw"


def service_section(path):
    """[Service] key=value lines of a unit, repeated keys kept in order."""
    section, out = None, []
    for line in open(path):
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.append((key, value))
    return out


def home_for_unit(tmp_path):
    """A home where the unit's %h/.local/bin/vncmcp is our console script."""
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "vncmcp").symlink_to(VNCMCP)
    (home / ".config" / "vncmcp").mkdir(parents=True)
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    return home, run


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="scripts/setup installs systemd")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    home, run = home_for_unit(tmp_path)
    env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(run), XDG_CONFIG_HOME=str(home / ".config"))
    out = subprocess.run(["systemd-analyze", "--user", "verify", UNIT], env=env, capture_output=True, text=True)
    # verify only warns (exit 0) about unknown or unparsable lines: any output is a failure.
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


def test_service_runs_as_the_unit_starts_it(tmp_path):
    assert os.path.exists(VNCMCP), "the vncmcp console script is installed"
    desktop = start_xvnc(geometry="640x480", security="VncAuth", password=PASSWORD)
    home, run = home_for_unit(tmp_path)
    config_home = home / ".config"
    settings = dict(service_section(UNIT))
    assert settings["Type"] == "notify" and settings["KillMode"] == "mixed"

    def expand(value):
        return value.replace("%h", str(home)).replace("%E", str(config_home))

    # What systemd does before ExecStart: the config and password where the unit says,
    # the credential copied into $CREDENTIALS_DIRECTORY, the runtime directory with its mode.
    example = open(EXAMPLE).read().replace("port = 5900", f"port = {desktop.port}")
    env_lines = [expand(v) for k, v in service_section(UNIT) if k == "Environment"]
    unit_env = dict(line.split("=", 1) for line in env_lines)
    with open(unit_env["VNCMCP_CONFIG"], "w") as f:
        f.write(example)
    cred_name, cred_source = expand(settings["LoadCredential"]).split(":", 1)
    with open(cred_source, "w") as f:
        f.write(PASSWORD)
    creds = tmp_path / "credentials"
    creds.mkdir()
    shutil.copy(cred_source, creds / cred_name)
    runtime = run / settings["RuntimeDirectory"]
    runtime.mkdir(mode=int(settings["RuntimeDirectoryMode"], 8))
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.2)
    watchdog_sec = float(settings["WatchdogSec"])

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VNCMCP_", "XDG_"))}
    env.update(unit_env, HOME=str(home), XDG_RUNTIME_DIR=str(run), RUNTIME_DIRECTORY=str(runtime), CREDENTIALS_DIRECTORY=str(creds),
               NOTIFY_SOCKET=notify_path, WATCHDOG_USEC=str(int(watchdog_sec * 1e6)), VNCMCP_OCR_WORKERS="1")
    argv = expand(settings["ExecStart"]).split()
    log = open(tmp_path / "journal", "w+")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path))
    try:
        messages, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline and not any("READY=1" in m for m in messages):
            try:
                messages.append(notify.recv(4096).decode())
            except socket.timeout:
                assert proc.poll() is None, open(tmp_path / "journal").read()
        assert any("READY=1" in m for m in messages), "no READY=1 within 30 s"

        # An operator and an MCP client find it with nothing but $XDG_RUNTIME_DIR.
        client_env = {k: v for k, v in os.environ.items() if not k.startswith(("VNCMCP_", "XDG_"))}
        client_env.update(XDG_RUNTIME_DIR=str(run))
        # READY=1 means the workers run; the VNC session may still be authenticating.
        deadline = time.monotonic() + 10
        while True:
            status = subprocess.run([VNCMCP, "ctl", "status"], env=client_env, capture_output=True, text=True,
                                    timeout=20)
            assert status.returncode == 0, status.stdout + status.stderr
            row = next(l for l in status.stdout.splitlines() if l.startswith("vnc-main"))
            if "conn=yes" in row or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "RUNNING" in row and "conn=yes" in row, "connected with the password from the credential"

        from broker.supervisor import ping
        assert ping(str(runtime))["pid"] == proc.pid
        assert mcp_status(client_env)["desktops"][0]["connected"], "an MCP frontend used the unit's service"
        assert ping(str(runtime))["pid"] == proc.pid, "and started no service of its own"

        proc.send_signal(signal.SIGTERM)  # KillMode=mixed: SIGTERM to the main process only
        assert proc.wait(timeout=float(settings["TimeoutStopSec"])) == 0
        assert sorted(os.listdir(runtime)) == [], "nothing left in the runtime directory"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        desktop.stop()
    log.seek(0)
    journal = log.read()
    assert PASSWORD not in journal and PASSWORD not in status.stdout
    # The journal tells the user the one-line MCP client entry that reaches this service.
    assert f'MCP clients connect with {{"command": "{VNCMCP}", "args": ["mcp"]}}' in journal, journal


def mcp_status(env) -> dict:
    """The `status` tool of `vncmcp mcp` (stdio), as an MCP client configured with
    {"command": "vncmcp", "args": ["mcp"]} sees it."""
    import asyncio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    async def main():
        params = StdioServerParameters(command=VNCMCP, args=["mcp"], env=env)
        async with Client(stdio_client(params), read_timeout_seconds=30) as client:
            result = await client.call_tool("status", {})
            assert not result.is_error
            return result.structured_content
    return asyncio.run(main())


def test_example_config_and_every_commented_key_are_valid(tmp_path, monkeypatch):
    text = open(EXAMPLE).read()
    cfg = config.load(EXAMPLE, env={})
    assert list(cfg.desktops) == ["main"] and cfg.default_desktop.port == 5900

    # Uncomment every `# key = value` line and the commented [desktops.lab] table; the files
    # they name exist in a throwaway home.
    home = tmp_path / "home"
    (home / ".config" / "vncmcp").mkdir(parents=True)
    for name in ("main.pass", "lab.pass"):
        (home / ".config" / "vncmcp" / name).write_text("pw\n")
    (home / ".config" / "vncmcp" / "ca.pem").write_text("a CA file\n")  # load() checks it exists
    uncommented = re.sub(r"(?m)^# (\[desktops\.\w+\]|\w+ = .*)$", r"\1", text)
    assert uncommented.count("\n") == text.count("\n") and uncommented != text
    path = tmp_path / "all.toml"
    path.write_text(uncommented)
    monkeypatch.setenv("HOME", str(home))  # ~ in the example's paths
    cfg = config.load(str(path), env={})
    assert list(cfg.desktops) == ["main", "lab"]
    assert cfg.ocr_workers == 2 and cfg.ocr_lang == "eng" and cfg.ocr_listen == "tcp://0.0.0.0:5599"
    assert cfg.metrics_listen == "127.0.0.1:9750" and cfg.http_listen == "127.0.0.1:8765"
    main = cfg.desktops["main"]
    assert main.password == "pw" and main.security == ["vncauth", "x509vnc"] and main.encodings == ["tight", "zrle", "raw"]
    assert main.tls_fingerprint and main.username == "me" and cfg.desktops["lab"].port == 5901

    broken = uncommented.replace('tls_fingerprint = "', 'tls_fingerprint = "sha256:')
    path.write_text(broken)
    with pytest.raises(config.ConfigError, match=r"tls_fingerprint must be the certificate's SHA-256"):
        config.load(str(path), env={})
