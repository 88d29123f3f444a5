"""The audit log: one JSON line per input tool call (everything that can change a desktop),
appended by every frontend process to the same file.

    {"time": "2026-11-22T10:15:03.123Z", "pid": 4242, "desktop": "main", "tool": "type_text",
     "arguments": {"text": "<redacted: 12 characters>"}, "result": "ok", "ms": 183}

`result` is "ok" or "error: <the tool error>". Typed and clipboard text is replaced by its
length unless the operator sets audit_redact_text = false. Each line goes out in one
write() on an O_APPEND descriptor, so lines of concurrent frontends do not interleave.
A log that cannot be written costs a warning on stderr, never the tool call.
"""
from __future__ import annotations

import json
import logging
import os
import time

log = logging.getLogger("vncmcp.audit")

INPUT_TOOLS = frozenset({"click", "move_mouse", "drag", "scroll", "mouse_down", "mouse_up",
                         "press_key", "hold_key", "type_text", "set_clipboard"})
TEXT_ARGUMENTS = {"type_text": ("text",), "set_clipboard": ("text",)}


def _timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class AuditLog:
    def __init__(self, path: str | None, redact_text: bool = True):
        self.path = path
        self.redact_text = redact_text
        self._fd: int | None = None
        self._warned = False

    def _open(self) -> int:
        if self._fd is None:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def shown_arguments(self, tool: str, arguments: dict) -> dict:
        shown = dict(arguments or {})
        if self.redact_text:
            for key in TEXT_ARGUMENTS.get(tool, ()):
                if isinstance(shown.get(key), str):
                    shown[key] = f"<redacted: {len(shown[key])} characters>"
        return shown

    def record(self, tool: str, arguments: dict, result: str, started: float, finished: float) -> None:
        if not self.path or tool not in INPUT_TOOLS:
            return
        entry = {"time": _timestamp(started), "pid": os.getpid(), "desktop": (arguments or {}).get("desktop"),
                 "tool": tool, "arguments": self.shown_arguments(tool, arguments), "result": result,
                 "ms": round((finished - started) * 1000)}
        line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode()
        try:
            os.write(self._open(), line)
        except OSError as e:
            if not self._warned:
                log.warning("cannot write the audit log %s: %s", self.path, e.strerror)
                self._warned = True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
