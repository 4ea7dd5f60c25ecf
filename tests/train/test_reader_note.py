"""Ray Data's "may hang forever" warning about a rank's reader that waits for a CPU reads, in a
training worker, as what it means (train/quiet.py)."""
import io
import logging
import time
from types import SimpleNamespace

from vlv_ray.train import quiet


def test_a_starved_reader_is_said_as_what_it_means():
    from ray.data._internal.execution import resource_manager as rm

    logger = logging.getLogger(rm.__name__)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        quiet.in_worker()  # what each training worker runs first
        op = "TaskPoolMapOperator[MapBatches(read_and_decode)]"
        # Ray Data's own check, on an operator starved for longer than its delay.
        rm.ReservationOpResourceAllocator._warn_if_op_starved_too_long(
            SimpleNamespace(_op_starved_since={op: time.monotonic() - rm.STARVATION_WARNING_DELAY_S - 1}), op)
    finally:
        logger.removeFilter(quiet._say_what_a_starved_reader_means)
        logger.removeHandler(handler)
    assert stream.getvalue().strip() == quiet.STARVED_NOTE
    assert "hang forever" not in stream.getvalue()
