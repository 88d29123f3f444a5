"""`vncmcp serve`: the supervisor. Starts every child as a fresh interpreter, restarts it
by broker/restart_policy.py, kills it when it stops heartbeating, reports to systemd,
answers operators (`vncmcp stats`, `vncmcp ctl`). Imports nothing heavy.

Children (names as `vncmcp stats` shows them):
    vnc-<desktop>   one per configured desktop       python -m broker.cli vnc-worker --desktop NAME
    broker          OCR scheduling and store         python -m broker.cli broker
    ocr-<n>         OCR workers, n = 1..ocr_workers  python -m broker.cli ocr-worker
    http            with http_listen set             python -m broker.cli mcp --no-service --http HOST:PORT

Operator socket `supervisor.ctl` (ROUTER, broker/wire.py conventions):
    b"ping" {}            -> {pid, ready, desktops: [names]}
    b"stats" {}           -> {pid, ready, uptime, processes: [{name, kind, state, pid, restarts,
                              uptime, cpu_percent, rss_mb, reason, figures}]}
    b"restart" {name}     -> {name, state}   (also brings a FATAL child back)
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import zmq

from broker import procstat, wire
from broker.child import CHILD_NAME_ENV, heartbeat_endpoint
from broker.restart_policy import History, Policy, State, after_exit, is_hung
from broker.sdnotify import Notifier

STOP_TIMEOUT = 5.0          # SIGTERM to SIGKILL, per stop
POLL_INTERVAL_MS = 100
STATUS_INTERVAL = 5.0
SAMPLE_INTERVAL = 1.0       # CPU% of each child, and the snapshot the metrics endpoint serves
VNC_POLICY = Policy(can_be_fatal=False)
BROKER_POLICY = Policy()
OCR_POLICY = Policy(busy_limit=60.0)
HTTP_POLICY = Policy()


def ctl_endpoint(runtime_dir: str) -> str:
    return f"ipc://{os.path.join(runtime_dir, 'supervisor.ctl')}"


@dataclass
class Child:
    name: str
    kind: str                          # "vnc", "broker", "ocr"
    argv: list[str]
    policy: Policy
    env: dict = field(default_factory=dict)
    state: State = State.STOPPED
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    last_heartbeat: float | None = None
    busy_since: float | None = None
    figures: dict = field(default_factory=dict)
    restarts: int = 0
    consecutive_failures: int = 0
    next_start: float = 0.0
    reason: str = ""
    kill_reason: str = ""
    cpu_sample: tuple[float, float] | None = None   # (when, CPU seconds) at the last sample
    cpu_percent: float | None = None                 # over the last SAMPLE_INTERVAL


class Supervisor:
    def __init__(self, cfg, config_path: str | None = None):
        self.cfg = cfg
        self.runtime_dir = wire.ensure_runtime_dir(cfg.runtime_dir)
        self.notifier = Notifier()
        self.started = time.monotonic()
        self.ready = False
        self.stopping = False
        self.children: list[Child] = []
        self.extra_env: dict = {}
        self.config_path = config_path
        self._lock_file = None
        self.demo_desktop = None

    # -- set-up -----------------------------------------------------------------------
    def acquire_lock(self) -> None:
        """One service per runtime directory: a second `vncmcp serve` refuses to start."""
        path = os.path.join(self.runtime_dir, "supervisor.lock")
        self._lock_file = open(path, "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"vncmcp: a service is already running in {self.runtime_dir}") from None
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()
        self._remove_stale_sockets()

    def _remove_stale_sockets(self) -> None:
        # We hold the lock, so any socket file here belongs to a service that died.
        for name in os.listdir(self.runtime_dir):
            if name.endswith((".pub", ".ctl", ".hb", ".jobs")):
                try:
                    os.unlink(os.path.join(self.runtime_dir, name))
                except FileNotFoundError:
                    pass

    def plan_children(self) -> None:
        base = [sys.executable, "-m", "broker.cli"]
        cfg_args = ["--config", self.config_path] if self.config_path else []
        for name in self.cfg.desktops:
            self.children.append(Child(f"vnc-{name}", "vnc", base + ["vnc-worker", "--desktop", name] + cfg_args,
                                       VNC_POLICY))
        self.children.append(Child("broker", "broker", base + ["broker"] + cfg_args, BROKER_POLICY))
        for n in range(1, self.cfg.ocr_workers + 1):
            self.children.append(Child(f"ocr-{n}", "ocr", base + ["ocr-worker"] + cfg_args, OCR_POLICY))
        if self.cfg.http_listen:
            self.children.append(Child("http", "http", base + ["mcp", "--no-service", "--http", self.cfg.http_listen]
                                       + cfg_args, HTTP_POLICY))

    def start_demo_if_needed(self) -> None:
        desktop = self.cfg.default_desktop
        if not desktop.demo:
            return
        from broker.demo import start_demo_desktop
        self.demo_desktop, password_file = start_demo_desktop(self.runtime_dir)
        self.extra_env.update({"VNCMCP_HOST": "127.0.0.1", "VNCMCP_PORT": str(self.demo_desktop.port),
                               "VNCMCP_PASSWORD_FILE": password_file})
        self.extra_env.pop("VNCMCP_PASSWORD", None)
        print(f"vncmcp: no VNC server configured; demo desktop :{self.demo_desktop.display} on "
              f"127.0.0.1:{self.demo_desktop.port} (password in {password_file})", file=sys.stderr, flush=True)

    # -- children ---------------------------------------------------------------------
    def spawn(self, child: Child, now: float) -> None:
        env = dict(os.environ, **self.extra_env, **child.env)
        if "VNCMCP_PASSWORD_FILE" in self.extra_env:
            env.pop("VNCMCP_PASSWORD", None)
        env.update({CHILD_NAME_ENV: child.name, "VNCMCP_SUPERVISOR_PID": str(os.getpid()),
                    "VNCMCP_RUNTIME_DIR": self.runtime_dir, "PYTHONUNBUFFERED": "1"})
        if child.kind == "ocr":
            env["OMP_THREAD_LIMIT"] = "1"
        child.proc = subprocess.Popen(child.argv, env=env, stdin=subprocess.DEVNULL)
        child.state = State.STARTING
        child.started_at = now
        child.last_heartbeat = None
        child.busy_since = None
        child.kill_reason = ""
        child.cpu_sample = None
        child.cpu_percent = None

    def tick(self, child: Child, now: float) -> None:
        """Advance one child's state machine."""
        if child.proc is not None and child.proc.poll() is not None:
            code = child.proc.returncode
            child.proc = None
            if child.state == State.STOPPING:
                child.state = State.STOPPED
                return
            decision = after_exit(child.policy, History(child.consecutive_failures, child.started_at), now,
                                  None if child.kill_reason else code, child.kill_reason)
            child.state, child.consecutive_failures = decision.state, decision.consecutive_failures
            child.reason = decision.reason
            child.next_start = now + decision.delay
            print(f"vncmcp: {child.name} {decision.reason}; "
                  + ("FATAL" if decision.state == State.FATAL else f"restarting in {decision.delay:.2f} s"),
                  file=sys.stderr, flush=True)
        if child.state == State.BACKOFF and now >= child.next_start and not self.stopping:
            child.restarts += 1
            self.spawn(child, now)
        elif child.state in (State.STARTING, State.RUNNING) and child.proc is not None and not child.kill_reason:
            hung = is_hung(child.policy, now, child.last_heartbeat, child.started_at, child.busy_since)
            if hung:
                child.kill_reason = f"hung ({hung}), killed"
                child.proc.kill()

    def on_heartbeat(self, message: dict, now: float) -> None:
        child = next((c for c in self.children if c.name == message.get("name")), None)
        if child is None or child.proc is None or child.proc.pid != message.get("pid"):
            return  # a heartbeat from a process we already replaced
        child.last_heartbeat = now
        busy = message.get("busy_since")
        # busy_since is the child's wall clock; keep the age, measured on our monotonic clock.
        child.busy_since = now - max(time.time() - busy, 0.0) if busy else None
        child.figures = message.get("stats") or {}
        if child.state == State.STARTING:
            child.state = State.RUNNING

    def restart(self, name: str, now: float) -> Child:
        child = next((c for c in self.children if c.name == name), None)
        if child is None:
            raise ValueError(f"no process named {name!r}; there are {', '.join(c.name for c in self.children)}")
        child.consecutive_failures = 0
        if child.proc is not None:
            child.kill_reason = "restarted by operator"
            child.proc.terminate()
        else:
            child.state, child.next_start = State.BACKOFF, now
        return child

    # -- reporting --------------------------------------------------------------------
    def sample_cpu(self, now: float) -> None:
        for c in self.children:
            cpu = procstat.cpu_seconds(c.proc.pid) if c.proc else None
            if cpu is None:
                c.cpu_sample, c.cpu_percent = None, None
                continue
            if c.cpu_sample is not None and now > c.cpu_sample[0]:
                c.cpu_percent = round((cpu - c.cpu_sample[1]) / (now - c.cpu_sample[0]) * 100, 1)
            c.cpu_sample = (now, cpu)

    def process_table(self, now: float) -> list[dict]:
        rows = []
        for c in self.children:
            pid = c.proc.pid if c.proc else None
            rows.append({"name": c.name, "kind": c.kind, "state": c.state.value, "pid": pid,
                         "restarts": c.restarts, "uptime": round(now - c.started_at, 1) if pid else 0,
                         "cpu_percent": c.cpu_percent if pid else None, "rss_mb": procstat.rss_mb(pid) if pid else None,
                         "reason": c.reason, "figures": c.figures})
        return rows

    def stats(self, now: float) -> dict:
        """What `vncmcp stats` and the metrics endpoint show."""
        return {"pid": os.getpid(), "ready": self.ready, "status": self.status_line(),
                "uptime": round(now - self.started, 1), "processes": self.process_table(now)}

    def status_line(self) -> str:
        counts: dict[str, int] = {}
        for c in self.children:
            counts[c.state.value] = counts.get(c.state.value, 0) + 1
        vnc = [c for c in self.children if c.kind == "vnc"]
        connected = sum(1 for c in vnc if c.figures.get("connected"))
        fatal = [f"{c.name}: {c.reason}" for c in self.children if c.state == State.FATAL]
        line = f"{connected}/{len(vnc)} desktops connected; " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        return line + (f"; FATAL {'; '.join(fatal)}" if fatal else "")

    def _check_ready(self) -> None:
        if self.ready:
            return
        essential = [c for c in self.children if c.kind in ("vnc", "broker")]
        if all(c.state in (State.RUNNING, State.FATAL) for c in essential):
            self.ready = True
            self.notifier.notify(READY=1, STATUS=self.status_line())
            print(f"vncmcp: ready ({self.status_line()})", file=sys.stderr, flush=True)
            print(f"vncmcp: MCP clients connect with {json.dumps(mcp_client_config(self.runtime_dir))}",
                  file=sys.stderr, flush=True)

    def _handle_ctl(self, sock: zmq.Socket, now: float) -> None:
        parts = sock.recv_multipart()
        envelope, verb, body = parts[:-2], parts[-2], wire.unpack(parts[-1])
        try:
            if verb == b"ping":
                reply = wire.ok_parts({"pid": os.getpid(), "ready": self.ready, "desktops": list(self.cfg.desktops)})
            elif verb == b"stats":
                reply = wire.ok_parts(self.stats(now))
            elif verb == b"restart":
                child = self.restart(str(body.get("name")), now)
                reply = wire.ok_parts({"name": child.name, "state": child.state.value})
            else:
                reply = wire.err_parts(f"unknown request {verb.decode(errors='replace')!r}")
        except (ValueError, TypeError) as e:
            reply = wire.err_parts(str(e))
        sock.send_multipart(envelope + reply)

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> int:
        ctx = zmq.Context.instance()
        heartbeats = ctx.socket(zmq.PULL)
        heartbeats.setsockopt(zmq.LINGER, 0)
        heartbeats.bind(heartbeat_endpoint(self.runtime_dir))
        ctl = ctx.socket(zmq.ROUTER)
        ctl.setsockopt(zmq.LINGER, 0)
        ctl.bind(ctl_endpoint(self.runtime_dir))
        poller = zmq.Poller()
        poller.register(heartbeats, zmq.POLLIN)
        poller.register(ctl, zmq.POLLIN)

        def request_stop(*_):
            self.stopping = True
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

        metrics = self.start_metrics()
        now = time.monotonic()
        for child in self.children:
            self.spawn(child, now)
        last_status = last_watchdog = last_sample = 0.0
        try:
            while not self.stopping:
                events = dict(poller.poll(POLL_INTERVAL_MS))
                now = time.monotonic()
                while heartbeats in events and heartbeats.poll(0):
                    self.on_heartbeat(wire.unpack(heartbeats.recv()), now)
                if ctl in events:
                    while ctl.poll(0):
                        self._handle_ctl(ctl, now)
                for child in self.children:
                    self.tick(child, now)
                self._check_ready()
                if now - last_sample >= SAMPLE_INTERVAL:
                    self.sample_cpu(now)
                    if metrics is not None:
                        metrics.publish(self.stats(now))
                    last_sample = now
                if self.notifier.watchdog_interval and now - last_watchdog >= self.notifier.watchdog_interval:
                    self.notifier.notify(WATCHDOG=1)
                    last_watchdog = now
                if self.ready and now - last_status >= STATUS_INTERVAL:
                    self.notifier.notify(STATUS=self.status_line())
                    last_status = now
        finally:
            self.notifier.notify(STOPPING=1, STATUS="stopping")
            if metrics is not None:
                metrics.close()
            self.stop_children()
            heartbeats.close()
            ctl.close()
            self.cleanup()
        return 0

    def start_metrics(self):
        """The Prometheus endpoint, when `metrics_listen` is set (prometheus_client is only
        imported then)."""
        if not self.cfg.metrics_listen:
            return None
        from broker.metrics import MetricsEndpoint
        endpoint = MetricsEndpoint(self.cfg.metrics_listen)
        print(f"vncmcp: metrics on http://{endpoint.address}/metrics", file=sys.stderr, flush=True)
        return endpoint

    def stop_children(self) -> None:
        """The HTTP frontend and OCR workers first, then the broker, then the VNC workers,
        each within STOP_TIMEOUT."""
        for kind in ("http", "ocr", "broker", "vnc"):
            group = [c for c in self.children if c.kind == kind and c.proc is not None]
            for c in group:
                c.state = State.STOPPING
                c.proc.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT
            for c in group:
                try:
                    c.proc.wait(max(deadline - time.monotonic(), 0.01))
                except subprocess.TimeoutExpired:
                    c.proc.kill()
                    c.proc.wait()
                c.proc = None
                c.state = State.STOPPED

    def cleanup(self) -> None:
        self._remove_stale_sockets()
        if self.demo_desktop is not None:
            self.demo_desktop.stop()
            try:
                os.unlink(os.path.join(self.runtime_dir, "demo-password"))
            except FileNotFoundError:
                pass
        if self._lock_file is not None:
            try:
                os.unlink(os.path.join(self.runtime_dir, "supervisor.lock"))
            except FileNotFoundError:
                pass
            self._lock_file.close()


def mcp_client_config(runtime_dir: str) -> dict:
    """The MCP client server entry that reaches this service (for the log and the README)."""
    script = os.path.join(os.path.dirname(sys.executable), "vncmcp")
    entry = {"command": script if os.path.exists(script) else "vncmcp", "args": ["mcp"]}
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    # A frontend finds the service in $XDG_RUNTIME_DIR/vncmcp by itself; elsewhere it must be told.
    if not (xdg and os.path.isdir(xdg) and os.path.samefile(os.path.dirname(runtime_dir), xdg)
            and os.path.basename(runtime_dir) == "vncmcp"):
        entry["env"] = {"VNCMCP_RUNTIME_DIR": runtime_dir}
    return entry


def exit_with_parent_if_embedded() -> None:
    """An embedded service (started by `vncmcp mcp`) ends when its frontend does."""
    if os.environ.get("VNCMCP_EMBEDDED_BY"):
        import ctypes
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != int(os.environ["VNCMCP_EMBEDDED_BY"]):
            sys.exit(0)


def main(cfg, args) -> int:
    exit_with_parent_if_embedded()
    supervisor = Supervisor(cfg, getattr(args, "config", None))
    supervisor.acquire_lock()
    try:
        supervisor.start_demo_if_needed()
        supervisor.plan_children()
        return supervisor.run()
    except BaseException:
        supervisor.stop_children()
        supervisor.cleanup()
        raise


# -- for operators and frontends: talk to a running service -----------------------------
def request(runtime_dir: str, verb: bytes, body: dict | None = None, timeout: float = 2.0) -> dict:
    """One request on the control socket (see the module docstring); WireError when no
    service runs there, it does not answer within `timeout`, or it answers with an error."""
    if not os.path.exists(os.path.join(runtime_dir, "supervisor.ctl")):
        raise wire.WireError(f"no vncmcp service is running (nothing in {runtime_dir})")
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(ctl_endpoint(runtime_dir))
        sock.send_multipart([b""] + wire.request_parts(verb, body))
        if not sock.poll(timeout * 1000):
            raise wire.WireError(f"the vncmcp service in {runtime_dir} does not answer")
        header, _ = wire.parse_reply(sock.recv_multipart()[1:])
        return header
    finally:
        sock.close()


def ping(runtime_dir: str, timeout: float = 0.5) -> dict | None:
    """The running service's {pid, ready, desktops}, or None."""
    try:
        return request(runtime_dir, b"ping", timeout=timeout)
    except wire.WireError:
        return None


class EmbeddedService:
    """A `vncmcp serve` started for one frontend's lifetime."""

    def __init__(self, proc: subprocess.Popen, log_path: str):
        self.proc = proc
        self.log_path = log_path

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ensure_service(cfg, config_path: str | None = None, timeout: float = 30.0) -> EmbeddedService | None:
    """None if a service already runs for cfg.runtime_dir; else start one and wait until it
    is ready (RuntimeError with its log tail if it cannot start)."""
    runtime_dir = wire.ensure_runtime_dir(cfg.runtime_dir)
    if ping(runtime_dir):
        return None
    log_path = os.path.join(runtime_dir, "embedded-service.log")
    argv = [sys.executable, "-m", "broker.cli", "serve"] + (["--config", config_path] if config_path else [])
    env = dict(os.environ, VNCMCP_EMBEDDED_BY=str(os.getpid()), VNCMCP_RUNTIME_DIR=runtime_dir)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = ping(runtime_dir)
        if answer and answer.get("ready"):
            return EmbeddedService(proc, log_path)
        if proc.poll() is not None:
            if ping(runtime_dir):  # another frontend won the race to start it
                return None
            break
        time.sleep(0.1)
    EmbeddedService(proc, log_path).stop()
    with open(log_path, "rb") as f:
        tail = f.read()[-2000:].decode(errors="replace")
    raise RuntimeError(f"could not start the vncmcp service (log {log_path}):\n{tail}")
