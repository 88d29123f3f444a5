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
    for flag, var in (("host", "VNCMCP_HOST"), ("port", "VNCMCP_PORT"), ("username", "VNCMCP_USERNAME"),
                      ("password_file", "VNCMCP_PASSWORD_FILE"), ("timeout", "VNCMCP_TIMEOUT")):
        value = getattr(args, flag, None)
        if value is not None:
            env[var] = str(value)
            if var == "VNCMCP_PASSWORD_FILE":
                env.pop("VNCMCP_PASSWORD", None)
    cfg = config.load(getattr(args, "config", None), env)
    return cfg


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

    p = sub.add_parser("vnc-worker", help="(internal) run the VNC worker for one desktop")
    _desktop_args(p)
    p.add_argument("--runtime-dir", help="where the worker's sockets live")

    p = sub.add_parser("serve", help="run the service in the foreground")
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
        if args.command in ("vnc-worker", "serve"):
            from broker import service
            return service.run(cfg, _pick_desktop(cfg, args), args)
    except ConfigError as e:
        print(f"vncmcp: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
