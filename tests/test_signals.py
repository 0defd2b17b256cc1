"""A second Ctrl-C during a case's cleanup waits until its record is written (issue: two Ctrl-C
in quick succession lost the ``cancelled`` record)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from peftcore.pipeline.signals import interrupts_deferred


@pytest.fixture(autouse=True)
def python_default_handlers() -> Iterator[None]:
    """Python's own Ctrl-C handler, whatever an earlier test's library installed (in the whole
    suite one leaves a handler that does not raise), restored after."""
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, earlier)


def test_an_interrupt_inside_waits_for_the_end_of_the_block() -> None:
    written = []
    with pytest.raises(KeyboardInterrupt), interrupts_deferred() as noted:
        os.kill(os.getpid(), signal.SIGINT)
        written.append("record")  # the cleanup goes on: nothing was raised here
        assert noted == [signal.SIGINT]
    assert written == ["record"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_while_a_first_interrupt_is_on_its_way_out_a_second_is_absorbed() -> None:
    with pytest.raises(KeyboardInterrupt, match="first"), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        raise KeyboardInterrupt("first")


def test_sigterm_gets_its_own_handler_after_the_block() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    earlier = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(KeyboardInterrupt, match=f"signal {int(signal.SIGTERM)}"), interrupts_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, earlier)


def test_nothing_noted_nothing_raised() -> None:
    with interrupts_deferred() as noted:
        pass
    assert noted == []
