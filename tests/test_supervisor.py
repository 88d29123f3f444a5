"""`vncmcp serve` with real processes and real signals."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from broker.demo import free_tcp_port, start_xvnc
from broker.supervisor import request
from broker.procstat import descendants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def stats(runtime_dir):
    try:
        return request(runtime_dir, b"stats", timeout=1)
    except Exception:
        return None


def proc_of(s, name):
    return next(p for p in s["processes"] if p["name"] == name)


@pytest.fixture
def service(request):
    """A real Xvnc and `vncmcp serve` against it, with a NOTIFY_SOCKET we read. Extra
    environment for the service: @pytest.mark.parametrize("service", [{...}], indirect=True)."""
    desktop = start_xvnc(geometry="640x480", security="VncAuth", password="sv-secret")
    runtime_dir = tempfile.mkdtemp(prefix="vncmcp-sv-")
    notify_path = os.path.join(runtime_dir, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    env = dict(os.environ, VNCMCP_HOST="127.0.0.1", VNCMCP_PORT=str(desktop.port), VNCMCP_PASSWORD="sv-secret",
               VNCMCP_RUNTIME_DIR=runtime_dir, VNCMCP_OCR_WORKERS="1", NOTIFY_SOCKET=notify_path,
               WATCHDOG_USEC="1000000", PYTHONPATH=ROOT)
    env.update(getattr(request, "param", {}))
    # The log goes to a file, not a pipe: a child that outlives a failed test would hold a pipe open.
    log = open(os.path.join(runtime_dir, "..", os.path.basename(runtime_dir) + ".log"), "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "serve"], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    handle = type("Service", (), {})()
    handle.proc, handle.runtime_dir, handle.notify, handle.desktop = proc, runtime_dir, notify, desktop
    try:
        assert wait_for(lambda: (s := stats(runtime_dir)) and proc_of(s, "vnc-default")["state"] == "RUNNING", 20), \
            "the vnc worker never came up"
        yield handle
    finally:
        family = descendants(proc.pid)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pid in family:  # a test may leave a child stopped (SIGSTOP) or orphaned
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        log.seek(0)
        print(log.read().decode(errors="replace")[-4000:])
        log.close()
        notify.close()
        desktop.stop()


def notifications(sock, seconds):
    sock.settimeout(0.2)
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
    return out


def test_kill9_vnc_worker_is_back_within_two_seconds(service):
    before = proc_of(stats(service.runtime_dir), "vnc-default")
    os.kill(before["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    back = wait_for(lambda: (s := stats(service.runtime_dir)) and (p := proc_of(s, "vnc-default"))["pid"] not in
                    (None, before["pid"]) and p["state"] == "RUNNING" and p["figures"].get("connected") and p, 10)
    assert back, "vnc worker did not come back"
    assert time.monotonic() - killed_at <= 2.0
    assert back["restarts"] == before["restarts"] + 1


def test_hung_child_is_killed_and_restarted(service):
    before = proc_of(stats(service.runtime_dir), "vnc-default")
    os.kill(before["pid"], signal.SIGSTOP)  # alive, but silent
    back = wait_for(lambda: (s := stats(service.runtime_dir)) and (p := proc_of(s, "vnc-default"))["pid"] not in
                    (None, before["pid"]) and p, 20)
    assert back, "a silent child was not replaced"
    assert "hung" in back["reason"] and "no heartbeat" in back["reason"]
    assert wait_for(lambda: not os.path.exists(f"/proc/{before['pid']}"), 5), "the hung process was not reaped"


@pytest.mark.parametrize("service", [{"VNCMCP_OCR_LANG": "xyz"}], indirect=True)  # no xyz.traineddata
def test_failing_child_goes_fatal_with_reason(service):
    s = wait_for(lambda: (s := stats(service.runtime_dir)) and proc_of(s, "ocr-1")["state"] == "FATAL" and s, 30)
    assert s, "ocr-1 never went FATAL"
    assert "configuration cannot work" in proc_of(s, "ocr-1")["reason"]
    assert proc_of(s, "ocr-1")["restarts"] == 0, "a child that says its configuration cannot work is not retried"
    assert wait_for(lambda: (s := stats(service.runtime_dir)) and proc_of(s, "vnc-default")["state"] == "RUNNING"
                    and proc_of(s, "broker")["state"] == "RUNNING" and proc_of(s, "ocr-1")["state"] == "FATAL", 10), \
        "the other processes keep running"
    assert "FATAL" in s["status"]
    out = subprocess.run([sys.executable, "-m", "broker.cli", "stats"], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, VNCMCP_RUNTIME_DIR=service.runtime_dir, PYTHONPATH=ROOT))
    assert out.returncode == 0 and "ocr-1" in out.stdout and "FATAL" in out.stdout
    assert "sv-secret" not in out.stdout
    health = subprocess.run([sys.executable, "-m", "broker.cli", "ctl", "status"], capture_output=True, text=True,
                            cwd=ROOT, env=dict(os.environ, VNCMCP_RUNTIME_DIR=service.runtime_dir, PYTHONPATH=ROOT))
    assert health.returncode == 3 and "FATAL" in health.stdout, "a FATAL process makes the health check fail"


def test_sigterm_leaves_nothing_behind_and_systemd_heard_everything(service):
    messages = notifications(service.notify, 1.5)
    pids = [service.proc.pid] + descendants(service.proc.pid)
    assert len(pids) >= 2
    service.proc.send_signal(signal.SIGTERM)
    service.proc.wait(timeout=15)
    assert service.proc.returncode == 0
    messages += notifications(service.notify, 0.3)
    text = "\n".join(messages)
    assert "READY=1" in text and "WATCHDOG=1" in text and "STATUS=" in text and "STOPPING=1" in text
    assert "sv-secret" not in text
    alive = [p for p in pids if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    assert not alive, f"processes left: {alive}"
    leftovers = [f for f in os.listdir(service.runtime_dir) if f != "notify"]
    assert not leftovers, f"files left in the runtime dir: {leftovers}"


def test_second_service_refuses_to_start(service):
    out = subprocess.run([sys.executable, "-m", "broker.cli", "serve"], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, VNCMCP_RUNTIME_DIR=service.runtime_dir, VNCMCP_HOST="127.0.0.1",
                                  PYTHONPATH=ROOT), timeout=20)
    assert out.returncode != 0 and "already running" in out.stderr
    assert stats(service.runtime_dir)["ready"] is not None  # the first one is untouched


def run_cli(runtime_dir, *argv):
    return subprocess.run([sys.executable, "-m", "broker.cli", *argv], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, VNCMCP_RUNTIME_DIR=runtime_dir, PYTHONPATH=ROOT), timeout=20)


def test_operator_restart_and_health(service):
    assert wait_for(lambda: (s := stats(service.runtime_dir)) and s["ready"], 20)
    healthy = run_cli(service.runtime_dir, "ctl", "status")
    assert healthy.returncode == 0 and "vnc-default" in healthy.stdout and "RUNNING" in healthy.stdout
    before = proc_of(stats(service.runtime_dir), "broker")
    out = run_cli(service.runtime_dir, "ctl", "restart", "broker")
    assert out.returncode == 0 and "broker" in out.stdout
    back = wait_for(lambda: (p := proc_of(stats(service.runtime_dir), "broker"))["pid"] not in (None, before["pid"])
                    and p["state"] == "RUNNING" and p, 10)
    assert back and back["restarts"] == before["restarts"] + 1 and back["reason"].startswith("restarted by operator")
    wrong = run_cli(service.runtime_dir, "ctl", "restart", "nosuch")
    assert wrong.returncode == 1 and "no process named 'nosuch'" in wrong.stderr and "broker" in wrong.stderr
    as_json = run_cli(service.runtime_dir, "stats", "--json")
    table = json.loads(as_json.stdout)
    assert {p["name"] for p in table["processes"]} == {"vnc-default", "broker", "ocr-1"}
    vnc = proc_of(table, "vnc-default")
    assert vnc["figures"]["connected"] is True and vnc["rss_mb"] > 10


def test_no_service_is_a_clear_error(tmp_path):
    out = run_cli(str(tmp_path), "stats")
    assert out.returncode == 1 and "no vncmcp service is running" in out.stderr


METRICS_PORT = free_tcp_port()


def scrape(port):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text, name, **labels):
    """The value of one sample of the Prometheus text format, or None."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(got.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.parametrize("service", [{"VNCMCP_METRICS_LISTEN": str(METRICS_PORT)}], indirect=True)
def test_prometheus_endpoint_has_the_stats_figures(service):
    assert wait_for(lambda: (s := stats(service.runtime_dir)) and s["ready"], 20)
    text = wait_for(lambda: (t := scrape(METRICS_PORT)) and metric(t, "vncmcp_vnc_fps", process="vnc-default")
                    is not None and t, 10)
    assert text, "figures reach the endpoint within a few seconds"
    assert metric(text, "vncmcp_ready") == 1
    assert metric(text, "vncmcp_process_up", process="vnc-default", kind="vnc") == 1
    assert metric(text, "vncmcp_process_state", process="ocr-1", state="RUNNING") == 1
    assert metric(text, "vncmcp_process_state", process="ocr-1", state="FATAL") == 0
    assert metric(text, "vncmcp_vnc_connected", process="vnc-default") == 1
    assert metric(text, "vncmcp_process_resident_memory_bytes", process="broker") > 10e6
    assert metric(text, "vncmcp_process_restarts_total", process="broker") == 0

    os.kill(proc_of(stats(service.runtime_dir), "broker")["pid"], signal.SIGKILL)
    assert wait_for(lambda: metric(scrape(METRICS_PORT), "vncmcp_process_restarts_total", process="broker") == 1, 10)
    assert "sv-secret" not in scrape(METRICS_PORT)
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{METRICS_PORT}"], capture_output=True, text=True).stdout
    local_addresses = [line.split()[3] for line in listening.splitlines()]
    assert local_addresses == [f"127.0.0.1:{METRICS_PORT}"], "loopback only by default"


def test_metrics_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "broker.cli", "serve"], capture_output=True, text=True, cwd=ROOT,
                             timeout=30, env=dict(os.environ, VNCMCP_RUNTIME_DIR=str(tmp_path), VNCMCP_HOST="127.0.0.1",
                                                  VNCMCP_METRICS_LISTEN=f"127.0.0.1:{port}", PYTHONPATH=ROOT))
    assert out.returncode != 0
    assert f"metrics_listen 127.0.0.1:{port}: cannot listen on 127.0.0.1:{port}" in out.stderr
    assert os.listdir(tmp_path) == [], "nothing left behind"


HTTP_PORT = free_tcp_port()


@pytest.mark.parametrize("service", [{"VNCMCP_HTTP_LISTEN": f"127.0.0.1:{HTTP_PORT}"}], indirect=True)
def test_supervised_http_frontend(service):
    import asyncio
    from mcp import Client

    async def status():
        async with Client(f"http://127.0.0.1:{HTTP_PORT}/mcp") as client:
            result = await client.call_tool("status", {})
            return result.structured_content["desktops"][0]

    first = wait_for(lambda: (p := proc_of(stats(service.runtime_dir), "http"))["state"] == "RUNNING" and p, 20)
    assert first, "the supervisor runs the HTTP frontend and hears its heartbeat"
    assert wait_for(lambda: asyncio.run(status())["connected"], 20)
    os.kill(first["pid"], signal.SIGKILL)
    assert wait_for(lambda: (p := proc_of(stats(service.runtime_dir), "http"))["pid"] not in (None, first["pid"])
                    and p["state"] == "RUNNING", 5)
    assert wait_for(lambda: asyncio.run(status())["connected"], 20), "served again after the restart"
    time.sleep(11)  # longer than the hang limit: a heartbeating frontend is left alone
    assert proc_of(stats(service.runtime_dir), "http")["restarts"] == 1


def test_children_die_with_a_killed_supervisor_and_a_new_one_starts_clean(service):
    family = descendants(service.proc.pid)
    assert len(family) >= 3
    service.proc.kill()  # SIGKILL: no ordered stop, no cleanup
    service.proc.wait()
    gone = wait_for(lambda: not [p for p in family if os.path.exists(f"/proc/{p}")
                                 and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"], 10)
    assert gone, "every child ends when the supervisor is killed (PR_SET_PDEATHSIG)"
    assert [f for f in os.listdir(service.runtime_dir) if f.endswith((".ctl", ".hb", ".pub"))], \
        "sockets of the dead service are still there"
    env = dict(os.environ, VNCMCP_HOST="127.0.0.1", VNCMCP_PORT=str(service.desktop.port),
               VNCMCP_PASSWORD="sv-secret", VNCMCP_RUNTIME_DIR=service.runtime_dir, VNCMCP_OCR_WORKERS="1",
               PYTHONPATH=ROOT)
    again = subprocess.Popen([sys.executable, "-m", "broker.cli", "serve"], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: (s := stats(service.runtime_dir)) and s["pid"] == again.pid
                        and proc_of(s, "vnc-default")["figures"].get("connected"), 20), \
            "a new service takes over the runtime directory of a killed one"
    finally:
        again.terminate()
        assert again.wait(15) == 0
