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
from broker.config import apply_cli_overrides, parse_http  # noqa: F401 (parse_http: main, tests)
from mcp_frontend.desktops import Frontend, FrontendError
from mcp_frontend.tools import build_server

log = logging.getLogger("vncmcp.mcp")


def ensure_service(cfg, config_path: str | None = None):
    """The embedded-service hook: a handle with stop() when we started the service, None
    when one was already running (or it would not start: then the tools say which desktop
    has no worker)."""
    from broker.supervisor import ensure_service as start_embedded
    try:
        return start_embedded(cfg, config_path)
    except RuntimeError as e:
        log.error("%s", e)
        return None


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
        # --host/--port/... reach the embedded service (another process) through the environment.
        apply_cli_overrides(args, os.environ)
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
