"""preemption: SIGTERM inside a run only asks it to save and stop; outside, nothing."""

import os
import signal

from alphaprune import preemption


def test_sigterm_inside_the_block_is_a_request_and_the_handler_comes_back():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.saves_and_stops():
    assert not preemption.requested(0)
    os.kill(os.getpid(), signal.SIGTERM)  # the process lives on: the run's handler took it
    assert preemption.requested(1)
  assert signal.getsignal(signal.SIGTERM) is before
  with preemption.saves_and_stops():  # a new run starts with no request pending
    assert not preemption.requested(2)
