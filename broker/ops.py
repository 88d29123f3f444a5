"""`vncmcp stats` and `vncmcp ctl`: operator views of a running service, over the
supervisor's control socket (see broker/supervisor.py for the requests).

Exit status: 0 fine; 1 no service answers; 2 bad arguments; `ctl status` also exits
EXIT_DEGRADED (3) while the service is not ready or a process is FATAL, so that it can
serve as a health check (podman HealthCmd, scripts)."""
from __future__ import annotations

import json
import sys
import time

from broker import wire
from broker.supervisor import request

EXIT_DEGRADED = 3

# Each kind's own figures, as its heartbeat names them, in the order the table shows them.
FIGURES = {
    "vnc": [("connected", "conn"), ("fps", "fps"), ("bytes_per_s", "B/s")],
    "broker": [("queue", "queue"), ("inflight", "inflight"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms")],
    "ocr": [("jobs", "jobs"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms")],
}


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_table(stats: dict) -> str:
    head = ["name", "state", "pid", "restarts", "uptime", "cpu%", "rss MB", "figures"]
    rows = []
    for p in stats["processes"]:
        figures = " ".join(f"{label}={_fmt(p['figures'].get(key))}" for key, label in FIGURES.get(p["kind"], [])
                           if key in p["figures"])
        if p["figures"].get("error"):
            figures += f" error: {p['figures']['error']}"
        if p["state"] in ("FATAL", "BACKOFF") and p["reason"]:
            figures += f" ({p['reason']})"
        rows.append([p["name"], p["state"], _fmt(p["pid"]), str(p["restarts"]),
                     _duration(p["uptime"]) if p["pid"] else "-", _fmt(p["cpu_percent"]), _fmt(p["rss_mb"]), figures])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head) - 1)]
    lines = [f"service pid {stats['pid']}, up {_duration(stats['uptime'])}, "
             f"{'ready' if stats['ready'] else 'starting'}: {stats['status']}"]
    for r in [head] + rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return "\n".join(lines)


def healthy(stats: dict) -> bool:
    return bool(stats["ready"]) and not any(p["state"] == "FATAL" for p in stats["processes"])


def main(cfg, args) -> int:
    try:
        if args.command == "ctl" and args.action == "restart":
            if not args.name:
                print("vncmcp ctl restart: name a process (see `vncmcp ctl status`)", file=sys.stderr)
                return 2
            answer = request(cfg.runtime_dir, b"restart", {"name": args.name})
            print(f"{answer['name']}: restarting")
            return 0
        while True:
            stats = request(cfg.runtime_dir, b"stats")
            if getattr(args, "json", False):
                print(json.dumps(stats))
            else:
                if getattr(args, "watch", None):
                    print("\033[H\033[J", end="")
                print(format_table(stats))
            if not getattr(args, "watch", None):
                return EXIT_DEGRADED if args.command == "ctl" and not healthy(stats) else 0
            sys.stdout.flush()
            time.sleep(args.watch)
    except wire.WireError as e:
        print(f"vncmcp: {e}", file=sys.stderr)
        return 1
