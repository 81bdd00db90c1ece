"""`timings` (buy_x402/timings.py): phases that never overlap, nested ones counted for themselves alone,
a total that holds the time in no phase too. Driven by a clock the test moves."""
from __future__ import annotations

from buy_x402.timings import Timings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def test_phases_in_the_order_they_began_a_nested_one_counted_alone_and_the_total():
    clock = Clock()
    timings = Timings(clock)
    clock.tick(0.5)                       # before any phase: in the total only
    timings.switch("probe")
    clock.tick(1)
    timings.switch("sign")
    clock.tick(2)
    with timings.phase("write-default"):
        clock.tick(3)
        with timings.phase("canary"):
            clock.tick(4)
        clock.tick(5)
    clock.tick(6)                         # back in "sign", the phase running before
    timings.switch("probe")               # a phase entered again adds up
    clock.tick(0.25)
    timings.switch(None)
    clock.tick(10)
    assert timings.report(agent_cli=1.5) == {"probe": 1.25, "sign": 8, "write-default": 8, "canary": 4,
                                             "total": 31.75, "agent_cli": 1.5}


def test_a_phase_left_by_an_exception_still_counts_and_the_running_one_is_counted_to_the_report():
    clock = Clock()
    timings = Timings(clock)
    timings.switch("ready")
    try:
        with timings.phase("verify"):
            clock.tick(2)
            raise RuntimeError("the read-back failed")
    except RuntimeError:
        pass
    clock.tick(3)                         # still "ready"
    assert timings.report() == {"ready": 3, "verify": 2, "total": 5}  # zero parts are left out
    clock.tick(1)
    assert timings.report()["ready"] == 4  # a second report goes on counting
