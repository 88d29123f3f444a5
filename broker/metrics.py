"""The optional Prometheus endpoint (`metrics_listen`, default host 127.0.0.1): the same
figures as `vncmcp stats`, served by prometheus_client from a thread of the supervisor.

The supervisor's loop hands over a fresh stats snapshot once a second (publish); the HTTP
thread only ever reads the latest snapshot, so no state is shared beyond one reference.

    vncmcp_ready                                         1 once READY=1 was sent
    vncmcp_process_up{process,kind}                      1 while RUNNING
    vncmcp_process_state{process,kind,state}             1 for the current state
    vncmcp_process_restarts_total{process,kind}
    vncmcp_process_uptime_seconds{process,kind}
    vncmcp_process_cpu_percent{process,kind}             of one core, over the last second
    vncmcp_process_resident_memory_bytes{process,kind}
    vncmcp_<kind>_<figure>{process}                      each kind's own numeric figures
                                                         (vnc fps, bytes_per_s, connected;
                                                         broker queue, inflight, p50_ms ...)
"""
from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from broker.config import parse_listen
from broker.restart_policy import State

def _metric_name(kind: str, figure: str) -> str:
    return "vncmcp_" + re.sub(r"[^a-zA-Z0-9_]", "_", f"{kind}_{figure}")


class StatsCollector:
    def __init__(self):
        self.latest: dict | None = None

    def collect(self):
        stats = self.latest
        if stats is None:
            return
        yield GaugeMetricFamily("vncmcp_ready", "1 once the service is ready", value=1 if stats["ready"] else 0)
        labels = ["process", "kind"]
        up = GaugeMetricFamily("vncmcp_process_up", "1 while the process is RUNNING", labels=labels)
        state = GaugeMetricFamily("vncmcp_process_state", "1 for the process's current state",
                                  labels=labels + ["state"])
        restarts = CounterMetricFamily("vncmcp_process_restarts", "restarts since the service started", labels=labels)
        uptime = GaugeMetricFamily("vncmcp_process_uptime_seconds", "seconds since the process started", labels=labels)
        cpu = GaugeMetricFamily("vncmcp_process_cpu_percent", "CPU of one core over the last second", labels=labels)
        rss = GaugeMetricFamily("vncmcp_process_resident_memory_bytes", "resident memory", labels=labels)
        figures: dict[str, GaugeMetricFamily] = {}
        for p in stats["processes"]:
            key = [p["name"], p["kind"]]
            up.add_metric(key, 1 if p["state"] == State.RUNNING.value else 0)
            for s in State:
                state.add_metric(key + [s.value], 1 if p["state"] == s.value else 0)
            restarts.add_metric(key, p["restarts"])
            uptime.add_metric(key, p["uptime"])
            if p["cpu_percent"] is not None:
                cpu.add_metric(key, p["cpu_percent"])
            if p["rss_mb"] is not None:
                rss.add_metric(key, p["rss_mb"] * 1024 * 1024)
            for figure, value in (p["figures"] or {}).items():
                if isinstance(value, bool):
                    value = int(value)
                if not isinstance(value, (int, float)):
                    continue
                name = _metric_name(p["kind"], figure)
                family = figures.setdefault(name, GaugeMetricFamily(name, f"{p['kind']} figure {figure}",
                                                                    labels=["process"]))
                family.add_metric([p["name"]], value)
        yield from (up, state, restarts, uptime, cpu, rss)
        yield from figures.values()


class MetricsEndpoint:
    def __init__(self, listen: str):
        host, port = parse_listen(listen)
        self.collector = StatsCollector()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as e:
            raise SystemExit(f"vncmcp: metrics_listen {listen}: cannot listen on {host}:{port}: {e.strerror}") from None
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def publish(self, stats: dict) -> None:
        self.collector.latest = stats

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
