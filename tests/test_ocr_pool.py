"""Pure logic of the OCR broker with fakes: the worker pool's dispatch, requeue and poison
rules driven by a fake clock and a recording send(), and the choice of lines to read again
after a change. The same code runs against real processes in test_ocr_broker.py."""
import asyncio

import numpy as np
import pytest

from broker import wire
from broker.ocr_broker import (MAX_KILLS, Job, JobFailed, OcrStore, WorkerPool, changed_boxes, merge_boxes,
                               plan_reads)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make_pool():
    sent = []
    clock = Clock()
    pool = WorkerPool(lambda transport, ident, parts: sent.append((ident, parts[0], wire.unpack(parts[1]))), clock)
    return pool, sent, clock


def jobs_sent(sent):
    return [(ident, body["job_id"]) for ident, verb, body in sent if verb == wire.W_JOB]


def ready(pool, name, fd=None, pid=None):
    pid = pid if pid is not None else sum(name)     # a process of its own unless told
    pool.on_message("ipc", name, wire.W_READY, {"pid": pid, "host": "h"}, fd)


def job(clock, priority=False, deadline=30.0, lines=1):
    return Job({"lines": [[0, 0, 10, 10]] * lines}, b"px", clock.t + deadline, priority)


def run(coro):
    return asyncio.run(coro)


def test_least_recently_used_worker_gets_the_job_and_urgent_jobs_go_first():
    async def main():
        pool, sent, clock = make_pool()
        background = [pool.submit(job(clock)) for _ in range(2)]
        urgent = pool.submit(job(clock, priority=True))
        assert jobs_sent(sent) == []                       # nobody to run them yet
        ready(pool, b"a")
        ready(pool, b"b")
        first, second = jobs_sent(sent)
        assert first == (b"a", 3)                          # the urgent job, on the first ready worker
        assert second == (b"b", 1)
        pool.on_message("ipc", b"b", wire.W_RESULT, {"job_id": 1, "lines": [["x"]]})
        assert await background[0] == [["x"]]
        assert jobs_sent(sent)[-1] == (b"b", 2)            # b was free first
        pool.on_message("ipc", b"a", wire.W_RESULT, {"job_id": 3, "lines": [[]]})
        pool.on_message("ipc", b"b", wire.W_RESULT, {"job_id": 2, "lines": [[]]})
        await asyncio.gather(urgent, background[1])
        assert list(pool.idle) == [b"a", b"b"]
        assert pool.stats()["jobs"]["done"] == 3
    run(main())


def test_what_a_worker_learned_goes_to_the_other_workers_with_their_next_jobs():
    """The glyph relay: lines one worker's glyph table learned travel to the others with
    their next jobs, never back to the worker that learned them; a new worker is sent the
    backlog, a few lines per job; a worker that says ready again is not sent them twice."""
    async def main():
        pool, sent, clock = make_pool()
        pool.glyphs.per_job = 2
        ready(pool, b"a")
        ready(pool, b"b")
        for _ in range(2):
            pool.submit(job(clock))
        (_, first), (_, second) = jobs_sent(sent)
        pool.on_message("ipc", b"a", wire.W_RESULT, {"job_id": first, "lines": [[]],
                                                     "glyphs": [[8, ["a1"]], [8, ["a2"]], [8, ["a3"]]]})
        pool.submit(job(clock))                               # a is idle: it gets it, without its own lines
        assert sent[-1][0] == b"a" and "glyphs" not in sent[-1][2]
        assert sent[-1][2]["glyphs_upto"] == 3                    # past its own: a new socket skips them
        pool.on_message("ipc", b"b", wire.W_RESULT, {"job_id": second, "lines": [[]], "glyphs": [[8, ["b1"]]]})
        pool.submit(job(clock))
        ident, _, header = sent[-1]
        assert ident == b"b" and header["glyphs"] == [[8, ["a1"]], [8, ["a2"]]] and header["glyphs_upto"] == 2
        pool.on_message("ipc", b"b", wire.W_RESULT, {"job_id": header["job_id"], "lines": [[]]})
        pool.submit(job(clock))
        ident, _, header = sent[-1]
        assert ident == b"b" and header["glyphs"] == [[8, ["a3"]]]     # b1 is its own
        pool.on_message("ipc", b"b", wire.W_RESULT, {"job_id": header["job_id"], "lines": [[]]})
        # b said ready again (the broker had reset it): it already has everything.
        pool.on_message("ipc", b"b", wire.W_READY, {"pid": sum(b"b"), "host": "h", "glyphs_upto": header["glyphs_upto"]})
        pool.submit(job(clock))
        assert sent[-1][0] == b"b" and "glyphs" not in sent[-1][2]
        # A new worker gets all of it, from both, a job at a time.
        ready(pool, b"c")
        pool.submit(job(clock))
        pool.submit(job(clock))
        c_jobs = [header for ident, verb, header in sent if ident == b"c" and verb == wire.W_JOB]
        assert [h.get("glyphs") for h in c_jobs] == [[[8, ["a1"]], [8, ["a2"]]]]
        pool.on_message("ipc", b"c", wire.W_RESULT, {"job_id": c_jobs[0]["job_id"], "lines": [[]]})
        c_jobs = [header for ident, verb, header in sent if ident == b"c" and verb == wire.W_JOB]
        assert c_jobs[-1]["glyphs"] == [[8, ["a3"]], [8, ["b1"]]]
        assert pool.stats()["glyph_lines"] == {"learned": 4, "relayed": 7}
    run(main())


def test_a_worker_on_a_new_socket_is_not_sent_what_it_learned_itself():
    """A worker's socket ident changes when it reconnects (host:pid:N), its table does
    not: the lines of its last result, learned after the cursor it says ready with, are
    still its own and must not come back to be counted twice."""
    async def main():
        pool, sent, clock = make_pool()
        ready(pool, b"h:7:1", pid=7)
        ready(pool, b"h:8:1", pid=8)
        pool.submit(job(clock))
        ident, _, header = sent[-1]
        pool.on_message("ipc", ident, wire.W_RESULT, {"job_id": header["job_id"], "lines": [[]],
                                                      "glyphs": [[8, ["mine"]]]})
        pid = int(ident.split(b":")[1])
        pool.forget(ident, "silent")
        pool.on_message("ipc", ident[:-1] + b"2", wire.W_READY,      # the same process, a new socket
                        {"pid": pid, "host": "h", "glyphs_upto": header["glyphs_upto"]})
        for _ in range(2):
            pool.submit(job(clock))
        headers = {i: h for i, verb, h in sent if verb == wire.W_JOB}
        assert "glyphs" not in headers[ident[:-1] + b"2"]
        other = next(i for i in headers if i.split(b":")[1] != str(pid).encode())
        assert headers[other]["glyphs"] == [[8, ["mine"]]]
    run(main())


def test_a_silent_worker_has_its_job_requeued_in_front():
    async def main():
        pool, sent, clock = make_pool()
        ready(pool, b"a")
        first = pool.submit(job(clock))
        pool.submit(job(clock))
        assert jobs_sent(sent) == [(b"a", 1)]
        clock.t += wire.WORKER_HEARTBEAT * wire.WORKER_LIVENESS + 0.1   # a never beats again
        pool.tick()
        assert b"a" not in pool.workers and pool.requeued == 1
        ready(pool, b"b")
        assert jobs_sent(sent)[-1] == (b"b", 1)            # the lost job before the waiting one
        pool.on_message("ipc", b"b", wire.W_RESULT, {"job_id": 1, "lines": [["ok"]]})
        assert await first == [["ok"]]
    run(main())


def test_heartbeats_keep_a_busy_worker_alive_until_its_attempt_deadline():
    async def main():
        pool, sent, clock = make_pool()
        ready(pool, b"a")
        result = pool.submit(job(clock, deadline=100.0))
        for _ in range(8):
            clock.t += wire.WORKER_HEARTBEAT
            pool.on_message("ipc", b"a", wire.W_HEARTBEAT, {"busy": 1})
            pool.tick()
        assert b"a" in pool.workers and pool.requeued == 0
        # Recognition that never returns: past the attempt deadline the job moves on.
        while b"a" in pool.workers:
            clock.t += wire.WORKER_HEARTBEAT
            pool.on_message("ipc", b"a", wire.W_HEARTBEAT, {"busy": 1})
            pool.tick()
        assert pool.requeued == 1 and not result.done()
        # Its late answer is still welcome while the job waits; then it must say ready again.
        pool.on_message("ipc", b"a", wire.W_RESULT, {"job_id": 1, "lines": [["late"]]})
        assert await result == [["late"]]
        assert sent[-1][1] == wire.W_RESET
    run(main())


def test_a_job_that_kills_two_workers_is_dropped_and_the_pool_goes_on():
    async def main():
        pool, sent, clock = make_pool()
        ready(pool, b"a", fd=7)
        ready(pool, b"b", fd=8)
        clock.t += 1
        poison = pool.submit(job(clock))
        pool.on_disconnect(7)                              # kill -9: the socket closes
        assert jobs_sent(sent) == [(b"a", 1), (b"b", 1)]
        clock.t += 1
        pool.on_disconnect(8)
        with pytest.raises(JobFailed, match=f"dropped: {MAX_KILLS} OCR workers died"):
            await poison
        assert pool.failed == 1 and not pool.workers
        ready(pool, b"c")
        fine = pool.submit(job(clock))
        pool.on_message("ipc", b"c", wire.W_RESULT, {"job_id": 2, "lines": []})
        assert await fine == []
    run(main())


def test_a_disconnect_right_after_ready_on_a_reused_fd_is_ignored():
    async def main():
        pool, sent, clock = make_pool()
        ready(pool, b"old", fd=9)
        clock.t += 5
        ready(pool, b"new", fd=9)          # the kernel gave the old descriptor to a new peer
        assert b"old" not in pool.workers
        pool.on_disconnect(9)              # the old peer's event, late
        assert b"new" in pool.workers
    run(main())


def test_queued_jobs_expire_at_their_deadline_and_unavailable_is_remembered():
    async def main():
        pool, sent, clock = make_pool()
        late = pool.submit(job(clock, deadline=2.0))
        clock.t += 3
        pool.tick()
        with pytest.raises(JobFailed, match="expired"):
            await late
        pool.on_message("ipc", b"x", wire.W_UNAVAILABLE, {"error": "OCR unavailable: no traineddata for eng"})
        assert pool.unavailable.startswith("OCR unavailable")
        ready(pool, b"y")
        assert pool.unavailable is None
    run(main())


def test_promote_moves_waiting_background_jobs_forward():
    async def main():
        pool, sent, clock = make_pool()
        jobs = [job(clock) for _ in range(3)]
        for j in jobs:
            pool.submit(j)
        assert pool.promote(lambda j: j is jobs[2]) == 1
        ready(pool, b"a")
        assert jobs_sent(sent) == [(b"a", 3)]
    run(main())


def test_changed_boxes_are_tight_and_separate():
    old = np.zeros((100, 200), np.uint8)
    new = old.copy()
    new[10:12, 30:40] = 255
    new[80:81, 150:151] = 1
    assert changed_boxes(old, new, 5, 7) == [(35, 17, 45, 19), (155, 87, 156, 88)]
    assert changed_boxes(old, old.copy(), 0, 0) == []


def test_merge_boxes():
    assert sorted(merge_boxes([(0, 0, 10, 10), (5, 5, 20, 20), (50, 50, 60, 60)])) == [(0, 0, 20, 20), (50, 50, 60, 60)]
    assert merge_boxes([(0, 0, 10, 10), (14, 0, 20, 10)], gap=5) == [(0, 0, 20, 10)]


def test_plan_reads_takes_whole_lines_and_the_lines_they_replace():
    # Screen lines as the finder would see them after the change: "abcd" grew by one
    # character at x 40-48; the line below is untouched.
    screen = [(10, 10, 48, 20), (10, 30, 90, 40)]

    def find(win):
        return [b for b in screen if b[0] >= win[0] and b[1] >= win[1] and b[2] <= win[2] and b[3] <= win[3]]
    old = [(10, 10, 40, 20), (10, 30, 90, 40)]
    removed, added = plan_reads(old, [(40, 10, 48, 20)], find, (1000, 800))
    assert removed == {(10, 10, 40, 20)}          # the old, shorter line did not touch the change
    assert added == {(10, 10, 48, 20)}

    # A word deleted from the end: the remaining shorter line is read again although it
    # does not touch the changed pixels.
    screen = [(10, 10, 50, 20)]
    removed, added = plan_reads([(10, 10, 100, 20)], [(60, 10, 100, 20)], find, (1000, 800))
    assert removed == {(10, 10, 100, 20)} and added == {(10, 10, 50, 20)}


def test_plan_reads_grows_windows_until_lines_are_whole():
    long_line = (0, 100, 900, 112)
    calls = []

    def find(win):
        calls.append(win)
        # A finder cut by the window's edge reports the line up to that edge only.
        if win[1] <= 100 and win[3] >= 112:
            return [(max(long_line[0], win[0]), 100, min(long_line[2], win[2]), 112)]
        return []
    removed, added = plan_reads([], [(500, 100, 505, 112)], find, (1920, 1080))
    assert added == {long_line}
    assert len(calls) > 1


def test_store_updates_are_sequenced():
    store = OcrStore("d")
    u1 = store.apply([], [((0, 0, 5, 5), b"k", {"text": "a", "box": [0, 0, 5, 5]})], 1, 10, reset=True)
    u2 = store.apply([(0, 0, 5, 5)], [], 1, 12)
    assert (u1["rev"], u2["rev"]) == (1, 2) and u2["removed"] == [[0, 0, 5, 5]]
    assert store.snapshot()["lines"] == [] and store.seq == 12
