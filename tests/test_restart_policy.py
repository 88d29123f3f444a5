"""The restart policy as a pure function: no processes, no clock."""
import pytest

from broker.restart_policy import EX_CONFIG, History, Policy, State, after_exit, backoff_delay, is_hung

P = Policy(backoff_first=0.25, backoff_max=30.0, stable_after=10.0, fatal_after=5)


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_delay(P, n) for n in range(0, 10)] == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_short_runs_count_up_and_space_out():
    delays, failures, now = [], 0, 100.0
    for _ in range(4):
        d = after_exit(P, History(failures, started_at=now - 1.0), now, exit_code=1)
        assert d.state == State.BACKOFF
        delays.append(d.delay)
        failures = d.consecutive_failures
    assert delays == [0.0, 0.25, 0.5, 1.0]
    assert failures == 4


def test_a_stable_run_resets_the_count():
    d = after_exit(P, History(consecutive_failures=4, started_at=0.0), now=10.5, exit_code=1)
    assert d.state == State.BACKOFF and d.consecutive_failures == 1 and d.delay == 0.0


def test_repeated_start_failures_go_fatal():
    d = after_exit(P, History(consecutive_failures=4, started_at=99.0), now=100.0, exit_code=1)
    assert d.state == State.FATAL and "5 failed starts in a row" in d.reason


def test_vnc_worker_is_never_fatal():
    vnc = Policy(can_be_fatal=False, backoff_max=5.0)
    d = after_exit(vnc, History(consecutive_failures=50, started_at=99.0), now=100.0, exit_code=EX_CONFIG)
    assert d.state == State.BACKOFF and d.delay == 5.0


def test_config_exit_is_fatal_at_once():
    d = after_exit(P, History(consecutive_failures=0, started_at=0.0), now=100.0, exit_code=EX_CONFIG)
    assert d.state == State.FATAL and "configuration" in d.reason


@pytest.mark.parametrize("code,text", [(1, "exited with status 1"), (-9, "killed by signal 9"), (None, "hung")])
def test_reason_says_how_it_ended(code, text):
    assert text in after_exit(P, History(0, 0.0), 1.0, code).reason


def test_hang_detection():
    assert is_hung(P, now=100.0, last_heartbeat=95.0, started_at=0.0, busy_since=None) is None
    assert "no heartbeat for 10.5 s" == is_hung(P, now=105.5, last_heartbeat=95.0, started_at=0.0, busy_since=None)
    # Never heartbeated: silence counts from the start.
    assert is_hung(P, now=11.0, last_heartbeat=None, started_at=0.0, busy_since=None)
    assert is_hung(P, now=9.0, last_heartbeat=None, started_at=0.0, busy_since=None) is None
    assert "busy with one job" in is_hung(P, now=100.0, last_heartbeat=99.9, started_at=0.0, busy_since=30.0)
