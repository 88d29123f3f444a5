"""When to restart a child process: one pure function, no processes, no clock of its own.

    decision = after_exit(policy, history, now, exit_code)

States (supervisor.Child.state):
    STARTING  spawned, no heartbeat yet
    RUNNING   heartbeating
    BACKOFF   dead, waiting `decision.delay` before the next start
    FATAL     dead for good until an operator says `vncmcp ctl restart NAME`
    STOPPING  being stopped on purpose
    STOPPED   stopped on purpose
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

EX_CONFIG = 78  # sysexits.h: the child says its configuration cannot work (e.g. no traineddata)


class State(str, Enum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    FATAL = "FATAL"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


@dataclass(frozen=True)
class Policy:
    backoff_first: float = 0.25   # seconds before the first restart
    backoff_max: float = 30.0     # the cap
    stable_after: float = 10.0    # a run this long resets the failure count
    fatal_after: int = 5          # consecutive short runs that make it FATAL ...
    can_be_fatal: bool = True     # ... unless retrying is always right (the VNC worker: the server may just be down)
    hang_after: float = 10.0      # heartbeat silence that counts as a hang
    busy_limit: float = 60.0      # one job running this long counts as a hang


@dataclass(frozen=True)
class History:
    consecutive_failures: int     # short runs in a row before this exit
    started_at: float             # when the run that just ended started


@dataclass(frozen=True)
class Decision:
    state: State                  # BACKOFF or FATAL
    delay: float                  # seconds until the next start (BACKOFF only)
    consecutive_failures: int
    reason: str


def backoff_delay(policy: Policy, failures: int) -> float:
    """0 failures: start at once; then first, 2*first, 4*first ... up to the cap."""
    if failures <= 0:
        return 0.0
    return min(policy.backoff_first * 2 ** (failures - 1), policy.backoff_max)


def after_exit(policy: Policy, history: History, now: float, exit_code: int | None, why: str = "") -> Decision:
    """What to do when a child has died (`exit_code` None: killed by us for hanging)."""
    ran = now - history.started_at
    failures = 1 if ran >= policy.stable_after else history.consecutive_failures + 1
    how = why or (f"exited with status {exit_code}" if exit_code is not None and exit_code >= 0
                  else f"killed by signal {-exit_code}" if exit_code is not None else "hung")
    reason = f"{how} after {ran:.1f} s"
    if policy.can_be_fatal and exit_code == EX_CONFIG:
        return Decision(State.FATAL, 0.0, failures, f"{reason}: its configuration cannot work")
    if policy.can_be_fatal and failures >= policy.fatal_after:
        return Decision(State.FATAL, 0.0, failures, f"{reason}: {failures} failed starts in a row")
    # The first failure after a stable run restarts at once (recovery in well under 2 s);
    # only a run of failures backs off.
    return Decision(State.BACKOFF, backoff_delay(policy, failures - 1), failures, reason)


def is_hung(policy: Policy, now: float, last_heartbeat: float | None, started_at: float,
            busy_since: float | None) -> str | None:
    """Why a live child counts as hung, or None."""
    since = last_heartbeat if last_heartbeat is not None else started_at
    if now - since > policy.hang_after:
        return f"no heartbeat for {now - since:.1f} s"
    if busy_since is not None and now - busy_since > policy.busy_limit:
        return f"busy with one job for {now - busy_since:.1f} s"
    return None
