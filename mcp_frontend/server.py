"""`vncmcp mcp`: the MCP frontend process (stdio, or Streamable HTTP with --http).

    main(cfg, args)
      1. ensure_service(cfg): if no vncmcp service runs for cfg.runtime_dir, start one for
         this process's lifetime (broker/supervisor.py), so that a one-line MCP client
         config works;
      2. mirror every configured desktop (desktops.Frontend) and serve the tools of tools.py
         until the client goes away (stdin closes) or SIGTERM/SIGHUP/SIGINT;
      3. stop the embedded service, if we started one.

stdout belongs to the MCP protocol: everything else, logs included, goes to stderr.
"""
from __future__ import annotations

import logging
import os
import signal
import sys

import anyio

from broker.child import Heartbeat, child_name, die_with_parent
from mcp_frontend.desktops import Frontend, FrontendError
from mcp_frontend.tools import build_server

log = logging.getLogger("vncmcp.mcp")


def ensure_service(cfg, config_path: str | None = None):
    """The embedded-service hook: a handle with stop() when we started the service, None
    when one was already running (or the supervisor is not installed, or it would not
    start: then the tools say which desktop has no worker)."""
    try:
        from broker.supervisor import ensure_service as start_embedded
    except ImportError:
        log.warning("broker.supervisor is not installed: not starting an embedded service")
        return None
    try:
        return start_embedded(cfg, config_path)
    except RuntimeError as e:
        log.error("%s", e)
        return None


# `vncmcp mcp --host ... --port ...` put these into the settings of this process only; the
# embedded service is another process, which reads the environment.
CLI_OVERRIDES = (("host", "VNCMCP_HOST"), ("port", "VNCMCP_PORT"), ("username", "VNCMCP_USERNAME"),
                 ("password_file", "VNCMCP_PASSWORD_FILE"), ("timeout", "VNCMCP_TIMEOUT"))


def export_cli_overrides(args, env=os.environ) -> None:
    """Pass the desktop given on the command line on to an embedded service."""
    for flag, var in CLI_OVERRIDES:
        value = getattr(args, flag, None)
        if value is not None:
            env[var] = str(value)
            if var == "VNCMCP_PASSWORD_FILE":
                env.pop("VNCMCP_PASSWORD", None)


def adopt_service_desktops(cfg) -> None:
    """Serve the desktops the running service has, not the ones our own settings name: an
    MCP client configured with just `vncmcp mcp` knows nothing of the service's config file."""
    from broker.config import DesktopConfig
    from broker.supervisor import ping
    answer = ping(cfg.runtime_dir)
    names = (answer or {}).get("desktops")
    if names and list(cfg.desktops) != names:
        log.info("serving the running service's desktops: %s", ", ".join(names))
        cfg.desktops = {n: cfg.desktops.get(n) or DesktopConfig(name=n) for n in names}


LOOPBACK_NAMES = ("localhost",)


def parse_http(value: str) -> tuple[str, int]:
    """"HOST:PORT" (or "[v6]:PORT") -> (host, port). Loopback only: the HTTP transport has
    no authentication of its own, and anyone who reaches it drives the desktop."""
    import ipaddress
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--http takes HOST:PORT, e.g. 127.0.0.1:8765, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    try:
        loopback = host in LOOPBACK_NAMES or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"--http serves loopback only (127.0.0.1, ::1, localhost), got {host!r}: the MCP "
                         f"HTTP transport has no authentication; reach it remotely through an SSH tunnel "
                         f"or an authenticating reverse proxy")
    return host, int(port)


async def serve(cfg, default_desktop: str | None = None, http: tuple[str, int] | None = None,
                text_source=None) -> None:
    """Run the MCP server until its transport ends or a stop signal arrives."""
    async with Frontend(cfg, text_source=text_source, default_desktop=default_desktop) as fe:
        server = build_server(fe)
        async with anyio.create_task_group() as tg:
            async def stop_on_signal():
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return
            tg.start_soon(stop_on_signal)
            if child_name():  # supervised (http_listen): heartbeat, die with the supervisor
                tg.start_soon(Heartbeat(cfg.runtime_dir).run_async)
            if http:
                await server.run_streamable_http_async(host=http[0], port=http[1])
            else:
                await server.run_stdio_async()
            tg.cancel_scope.cancel()


def main(cfg, args) -> int:
    die_with_parent()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s mcp[%(process)d] %(levelname)s %(message)s")
    try:
        http = parse_http(args.http) if getattr(args, "http", None) else None
    except ValueError as e:
        print(f"vncmcp: {e}", file=sys.stderr)
        return 2
    service = None
    if not getattr(args, "no_service", False):
        export_cli_overrides(args)
        service = ensure_service(cfg, cfg.source)
    adopt_service_desktops(cfg)
    default_desktop = getattr(args, "desktop", None)
    if default_desktop and default_desktop not in cfg.desktops:
        print(f"vncmcp: no desktop named {default_desktop!r}; configured: {', '.join(cfg.desktops)}",
              file=sys.stderr)
        if service is not None:
            service.stop()
        return 2
    try:
        anyio.run(serve, cfg, default_desktop, http)
    except FrontendError as e:
        print(f"vncmcp: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if service is not None:
            service.stop()
    return 0
