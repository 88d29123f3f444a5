"""The `vncmcp` command. Each verb's work lives in its own module; this file only parses."""
from __future__ import annotations

import argparse
import os
import sys


def _desktop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML settings file (default: $VNCMCP_CONFIG)")
    p.add_argument("--desktop", help="which configured desktop (default: the first)")
    p.add_argument("--host", help="VNC server host (overrides VNCMCP_HOST)")
    p.add_argument("--port", type=int, help="VNC server port (overrides VNCMCP_PORT, default 5900)")
    p.add_argument("--username", help="user name for VeNCrypt Plain / Apple Remote Desktop")
    p.add_argument("--password-file", help="file holding the password (overrides VNCMCP_PASSWORD_FILE)")
    p.add_argument("--timeout", type=float, help="connect timeout in seconds (overrides VNCMCP_TIMEOUT)")
    p.add_argument("--encodings", help="comma-separated encoding preference, e.g. tight,zrle,raw")
    p.add_argument("--tls-ca-file", help="CA certificate to verify an X509 VeNCrypt server")
    p.add_argument("--tls-fingerprint", help="pinned SHA-256 fingerprint of the server certificate")


def _load_config(args):
    from broker import config
    env = dict(os.environ)
    config.apply_cli_overrides(args, env)
    return config.load(getattr(args, "config", None), env)


def _pick_desktop(cfg, args):
    from broker.config import ConfigError
    name = getattr(args, "desktop", None)
    if name is None:
        desktop = cfg.default_desktop
    elif name in cfg.desktops:
        desktop = cfg.desktops[name]
    else:
        raise ConfigError(f"no desktop named {name!r}; configured: {', '.join(cfg.desktops)}")
    if getattr(args, "encodings", None):
        desktop.encodings = [e.strip().lower() for e in args.encodings.split(",") if e.strip()]
    if getattr(args, "tls_ca_file", None):
        desktop.tls_ca_file = args.tls_ca_file
    if getattr(args, "tls_fingerprint", None):
        desktop.tls_fingerprint = args.tls_fingerprint
    from broker.config import _validate
    _validate(desktop, "")
    return desktop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vncmcp", description="See and drive a VNC desktop from MCP clients.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("probe", help="connect once and describe the VNC server")
    _desktop_args(p)
    p.add_argument("--screenshot", metavar="FILE.png", help="save one full frame")

    p = sub.add_parser("ocr", help="OCR an image file with the screen pipeline")
    p.add_argument("image")
    p.add_argument("--json", action="store_true", help="words with boxes and confidences")
    p.add_argument("--lang", help="tesseract language(s), e.g. eng or eng+deu (default: VNCMCP_OCR_LANG or eng)")

    p = sub.add_parser("serve", help="run the service in the foreground (systemd Type=notify)")
    _desktop_args(p)

    p = sub.add_parser("mcp", help="stdio MCP frontend; starts an embedded service if none is running")
    _desktop_args(p)
    p.add_argument("--http", metavar="HOST:PORT", help="serve Streamable HTTP on a loopback address instead of stdio")
    p.add_argument("--no-service", action="store_true",
                   help="never start an embedded service: use the one running (tests, externally managed service)")

    p = sub.add_parser("stats", help="per-process state, restarts, CPU, RSS and figures")
    p.add_argument("--config")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", nargs="?", const=2.0, type=float, metavar="SECONDS")

    p = sub.add_parser("ctl", help="operator control")
    p.add_argument("--config")
    p.add_argument("action", choices=["status", "restart"])
    p.add_argument("name", nargs="?", help="process name (for restart)")

    p = sub.add_parser("keygen", help="CURVE key pairs for remote OCR workers and frontends")
    p.add_argument("directory")

    p = sub.add_parser("ocr-worker", help="an OCR worker (on this or another machine)")
    p.add_argument("--config")
    p.add_argument("--connect", metavar="ENDPOINT", help="the broker's job endpoint, e.g. tcp://HOST:PORT")
    p.add_argument("--keys", metavar="DIR", help="CURVE keys from `vncmcp keygen` (required for tcp://)")

    p = sub.add_parser("broker", help="(internal) the OCR broker")
    p.add_argument("--config")

    p = sub.add_parser("vnc-worker", help="(internal) the VNC worker for one desktop")
    _desktop_args(p)

    args = parser.parse_args(argv)
    from broker.config import ConfigError
    try:
        cfg = _load_config(args)
        if args.command == "ocr":
            from broker import ocr_cli
            return ocr_cli.run(args.image, args.json, args.lang or cfg.ocr_lang)
        if args.command == "probe":
            from broker import probe
            return probe.run(_pick_desktop(cfg, args), args.screenshot)
        if args.command == "vnc-worker":
            from workers import vnc_worker
            return vnc_worker.main_for(_pick_desktop(cfg, args), cfg.runtime_dir)
        if args.command == "keygen":
            return _module_main("broker.keys", args)
        entry = {"serve": "broker.supervisor", "mcp": "mcp_frontend.server", "stats": "broker.ops",
                 "ctl": "broker.ops", "ocr-worker": "workers.ocr_worker", "broker": "broker.ocr_broker"}
        return _module_main(entry[args.command], cfg, args)
    except ConfigError as e:
        print(f"vncmcp: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _module_main(module: str, *call_args) -> int:
    """Run `module.main(...)`, importing only the module this verb needs."""
    import importlib
    return importlib.import_module(module).main(*call_args)


if __name__ == "__main__":
    sys.exit(main())
