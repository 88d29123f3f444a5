"""Settings: one TOML file (--config or VNCMCP_CONFIG) plus environment variables, the
environment winning. This module owns every setting name; nothing else reads os.environ
for settings.

    [service]
    runtime_dir = "/run/user/1000/vncmcp"
    ocr_workers = 2
    ocr_lang = "eng"
    audit_log = "~/.local/state/vncmcp/audit.jsonl"   # "off" for none
    audit_redact_text = true
    metrics_listen = "127.0.0.1:9750"                # Prometheus endpoint (off by default)
    http_listen = "127.0.0.1:8765"                   # a supervised Streamable HTTP MCP frontend

    [desktops.main]                 # any number of named desktops
    host = "192.168.1.20"
    port = 5900
    password_file = "~/.config/vncmcp/main.pass"

A single unnamed desktop can also be given at the top level (host = ..., port = ...).
The VNCMCP_HOST/PORT/USERNAME/PASSWORD/PASSWORD_FILE/TIMEOUT variables apply to the first
desktop (or create one named "default"). Passwords never appear in repr() or errors.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from workers.rfb import constants as C

SECURITY_CHOICES = {"none", "vncauth", "appleremotedesktop", "plain", "tlsnone", "tlsvnc", "tlsplain",
                    "x509none", "x509vnc", "x509plain"}
SERVICE_KEYS = {"runtime_dir", "ocr_workers", "ocr_lang", "ocr_listen", "keys_dir", "audit_log", "audit_redact_text",
                "metrics_listen", "http_listen"}
CREDENTIAL_NAMES = ("vncmcp-password", "password")  # systemd LoadCredential= names we read


class ConfigError(ValueError):
    """A setting is wrong; the message names it."""


@dataclass
class DesktopConfig:
    name: str = "default"
    host: str = "127.0.0.1"
    port: int = 5900
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    encodings: list[str] | None = None
    security: list[str] | None = None
    tls_ca_file: str | None = None
    tls_fingerprint: str | None = None
    tls_verify_hostname: bool = True
    max_width: int = 16384
    max_height: int = 16384
    max_cut_text: int = 16 * 1024 * 1024
    continuous_updates: bool = True
    demo: bool = False  # started by us on loopback because nothing was configured

    def session_options(self):
        from workers.rfb import Credentials, Limits, SessionOptions, TLSOptions
        return SessionOptions(
            host=self.host, port=self.port,
            credentials=Credentials(username=self.username, password=self.password),
            tls=TLSOptions(ca_file=self.tls_ca_file, fingerprint=self.tls_fingerprint,
                           verify_hostname=self.tls_verify_hostname),
            timeout=self.timeout,
            encodings=[C.ENCODINGS_BY_NAME[e] for e in self.encodings] if self.encodings else None,
            allowed_security=set(self.security) if self.security else None,
            limits=Limits(self.max_width, self.max_height, self.max_cut_text),
            continuous_updates=self.continuous_updates)


@dataclass
class Config:
    desktops: dict[str, DesktopConfig]
    runtime_dir: str
    ocr_workers: int
    ocr_lang: str
    source: str | None = None
    ocr_listen: str | None = None   # tcp://HOST:PORT for remote OCR workers (CURVE only)
    keys_dir: str | None = None     # `vncmcp keygen` directory for that endpoint
    audit_log: str | None = None    # JSON lines of every input tool call (None: off)
    audit_redact_text: bool = True  # typed and clipboard text logged as its length only
    metrics_listen: str | None = None  # [HOST:]PORT of the Prometheus endpoint (host default 127.0.0.1)
    http_listen: str | None = None     # HOST:PORT (loopback) of a supervised Streamable HTTP frontend

    @property
    def default_desktop(self) -> DesktopConfig:
        return next(iter(self.desktops.values()))


def _runtime_dir_default() -> str:
    base = os.environ.get("RUNTIME_DIRECTORY") or os.environ.get("XDG_RUNTIME_DIR")
    if base:
        # systemd's RuntimeDirectory= is ours already; XDG_RUNTIME_DIR is shared.
        return base if os.environ.get("RUNTIME_DIRECTORY") else os.path.join(base, "vncmcp")
    return f"/tmp/vncmcp-{os.getuid()}"


def parse_listen(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """metrics_listen: "PORT", "HOST:PORT" or "[v6]:PORT"; the host defaults to loopback."""
    host, sep, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"metrics_listen takes [HOST:]PORT, e.g. 127.0.0.1:9750, got {value!r}")
    return (host.strip("[]") if sep and host else default_host), int(port)


LOOPBACK_NAMES = ("localhost",)


def parse_http(value: str) -> tuple[str, int]:
    """--http / http_listen: "HOST:PORT" (or "[v6]:PORT") -> (host, port). Loopback only:
    the MCP HTTP transport has no authentication, and anyone who reaches it drives the desktop."""
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


# Command-line flags that stand for an environment setting of the first desktop.
CLI_OVERRIDES = (("host", "VNCMCP_HOST"), ("port", "VNCMCP_PORT"), ("username", "VNCMCP_USERNAME"),
                 ("password_file", "VNCMCP_PASSWORD_FILE"), ("timeout", "VNCMCP_TIMEOUT"))


def apply_cli_overrides(args, env) -> None:
    """Write `--host/--port/...` into `env` as their VNCMCP_* variables (a password file
    given on the command line replaces a VNCMCP_PASSWORD from the environment)."""
    for flag, var in CLI_OVERRIDES:
        value = getattr(args, flag, None)
        if value is not None:
            env[var] = str(value)
            if var == "VNCMCP_PASSWORD_FILE":
                env.pop("VNCMCP_PASSWORD", None)


def _audit_log_default(env) -> str:
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "vncmcp", "audit.jsonl")


def _flag(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _typed(where: str, key: str, value, kind):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}{key} must be {kind.__name__}, got {value!r}")
    return value


def _read_secret_file(path: str, setting: str) -> str:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as e:
        raise ConfigError(f"{setting}: cannot read {path}: {e.strerror}") from None


def _desktop_from_table(name: str, table: dict, where: str) -> DesktopConfig:
    d = DesktopConfig(name=name)
    types = {"host": str, "port": int, "username": str, "password": str, "timeout": float,
             "tls_ca_file": str, "tls_fingerprint": str, "tls_verify_hostname": bool,
             "max_width": int, "max_height": int, "max_cut_text": int, "continuous_updates": bool}
    for key, value in table.items():
        if key in types:
            setattr(d, key, _typed(where, key, value, types[key]))
        elif key == "password_file":
            d.password = _read_secret_file(_typed(where, key, value, str), f"{where}password_file")
        elif key in ("encodings", "security"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}{key} must be a list of names")
            setattr(d, key, [v.lower() for v in value])
        else:
            raise ConfigError(f"{where}{key} is not a setting")
    return d


def _validate(d: DesktopConfig, where: str) -> None:
    if not 0 < d.port < 65536:
        raise ConfigError(f"{where}port must be 1-65535, got {d.port}")
    if not d.host:
        raise ConfigError(f"{where}host is empty")
    if d.timeout <= 0:
        raise ConfigError(f"{where}timeout must be positive, got {d.timeout}")
    for e in d.encodings or []:
        if e not in C.ENCODINGS_BY_NAME:
            raise ConfigError(f"{where}encodings: unknown encoding {e!r}; "
                              f"choose from {', '.join(sorted(C.ENCODINGS_BY_NAME))}")
    for s in d.security or []:
        if s not in SECURITY_CHOICES:
            raise ConfigError(f"{where}security: unknown type {s!r}; choose from {', '.join(sorted(SECURITY_CHOICES))}")
    if d.tls_ca_file and not os.path.isfile(os.path.expanduser(d.tls_ca_file)):
        raise ConfigError(f"{where}tls_ca_file: no such file {d.tls_ca_file}")
    if d.tls_fingerprint:
        from workers.rfb.security import SecurityError, normalise_fingerprint
        try:
            normalise_fingerprint(d.tls_fingerprint)
        except SecurityError as e:
            raise ConfigError(f"{where}{e}") from None
    for key in ("max_width", "max_height", "max_cut_text"):
        if getattr(d, key) <= 0:
            raise ConfigError(f"{where}{key} must be positive")


def load(path: str | None = None, env: dict | None = None) -> Config:
    env = os.environ if env is None else env
    path = path or env.get("VNCMCP_CONFIG")
    data: dict = {}
    if path:
        try:
            with open(os.path.expanduser(path), "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"config file {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: {e}") from None

    service = data.pop("service", {})
    if not isinstance(service, dict):
        raise ConfigError("service must be a table")
    for key in service:
        if key not in SERVICE_KEYS:
            raise ConfigError(f"service.{key} is not a setting; the settings are {', '.join(sorted(SERVICE_KEYS))}")
    tables = data.pop("desktops", {})
    desktops: dict[str, DesktopConfig] = {}
    if not isinstance(tables, dict):
        raise ConfigError("desktops must be a table of named desktops")
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"desktops.{name} must be a table")
        desktops[name] = _desktop_from_table(name, table, f"desktops.{name}.")
    if data:  # top-level keys describe one unnamed desktop
        desktops = {"default": _desktop_from_table("default", data, ""), **desktops}

    first = next(iter(desktops.values()), None)
    env_keys = ("VNCMCP_HOST", "VNCMCP_PORT", "VNCMCP_USERNAME", "VNCMCP_PASSWORD",
                "VNCMCP_PASSWORD_FILE", "VNCMCP_TIMEOUT")
    if first is None:
        first = DesktopConfig(name="default", demo=not env.get("VNCMCP_HOST"))
        desktops["default"] = first
    if env.get("VNCMCP_HOST"):
        first.host = env["VNCMCP_HOST"]
    if env.get("VNCMCP_PORT"):
        try:
            first.port = int(env["VNCMCP_PORT"])
        except ValueError:
            raise ConfigError(f"VNCMCP_PORT must be a number, got {env['VNCMCP_PORT']!r}") from None
    if env.get("VNCMCP_USERNAME"):
        first.username = env["VNCMCP_USERNAME"]
    if env.get("VNCMCP_TIMEOUT"):
        try:
            first.timeout = float(env["VNCMCP_TIMEOUT"])
        except ValueError:
            raise ConfigError(f"VNCMCP_TIMEOUT must be seconds, got {env['VNCMCP_TIMEOUT']!r}") from None
    if env.get("VNCMCP_PASSWORD_FILE"):
        first.password = _read_secret_file(env["VNCMCP_PASSWORD_FILE"], "VNCMCP_PASSWORD_FILE")
    elif env.get("VNCMCP_PASSWORD") is not None and "VNCMCP_PASSWORD" in env:
        first.password = env["VNCMCP_PASSWORD"]
    elif first.password is None and env.get("CREDENTIALS_DIRECTORY"):
        for cred in CREDENTIAL_NAMES:
            p = Path(env["CREDENTIALS_DIRECTORY"]) / cred
            if p.is_file():
                first.password = _read_secret_file(str(p), f"systemd credential {cred}")
                break
    if any(env.get(k) for k in env_keys):
        first.demo = False

    for name, d in desktops.items():
        _validate(d, f"desktops.{name}." if name in tables else ("" if not env.get("VNCMCP_HOST") else "VNCMCP_"))

    try:
        ocr_workers = int(env.get("VNCMCP_OCR_WORKERS") or service.get("ocr_workers") or os.cpu_count() or 1)
    except ValueError:
        raise ConfigError(f"VNCMCP_OCR_WORKERS must be a number, got {env.get('VNCMCP_OCR_WORKERS')!r}") from None
    if ocr_workers < 0:
        raise ConfigError("ocr_workers must be 0 or more")
    audit_log = env.get("VNCMCP_AUDIT_LOG")
    if audit_log is None:
        audit_log = service.get("audit_log", _audit_log_default(env))
    if not isinstance(audit_log, str):
        raise ConfigError(f"audit_log must be a path, or \"off\", got {audit_log!r}")
    audit_log = None if audit_log.strip().lower() in ("", "off") else os.path.expanduser(audit_log)
    redact = env.get("VNCMCP_AUDIT_REDACT_TEXT")
    audit_redact_text = _flag("VNCMCP_AUDIT_REDACT_TEXT" if redact is not None else "audit_redact_text",
                              redact if redact is not None else service.get("audit_redact_text", True))
    metrics_listen = env.get("VNCMCP_METRICS_LISTEN") or service.get("metrics_listen") or None
    if metrics_listen is not None:
        try:
            parse_listen(str(metrics_listen))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        metrics_listen = str(metrics_listen)
    http_listen = env.get("VNCMCP_HTTP_LISTEN") or service.get("http_listen") or None
    if http_listen is not None:
        try:
            parse_http(str(http_listen))
        except ValueError as e:
            raise ConfigError(f"http_listen: {e}".replace("--http ", "")) from None
        http_listen = str(http_listen)
    return Config(desktops=desktops,
                  runtime_dir=env.get("VNCMCP_RUNTIME_DIR") or service.get("runtime_dir") or _runtime_dir_default(),
                  ocr_workers=ocr_workers,
                  ocr_lang=env.get("VNCMCP_OCR_LANG") or service.get("ocr_lang") or "eng",
                  source=path,
                  ocr_listen=env.get("VNCMCP_OCR_LISTEN") or service.get("ocr_listen") or None,
                  keys_dir=env.get("VNCMCP_KEYS_DIR") or service.get("keys_dir") or None,
                  audit_log=audit_log, audit_redact_text=audit_redact_text, metrics_listen=metrics_listen,
                  http_listen=http_listen)
