"""systemd's notify protocol (sd_notify(3)) without a library: one datagram per message."""
from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, env: dict | None = None):
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET")
        self.address = ("\0" + address[1:]) if address and address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        watchdog_for_us = usec and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 1e6 / 2 if watchdog_for_us else None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, **fields) -> None:
        """notify(READY=1, STATUS="...")."""
        if not self.address:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            # Never block: a notify socket nobody reads fills after net.unix.max_dgram_qlen
            # (often 10) datagrams, and a blocked supervisor restarts nothing.
            s.setblocking(False)
            try:
                s.connect(self.address)
                s.sendall(message)
            except OSError:
                pass  # systemd gone: nothing useful to do about it
