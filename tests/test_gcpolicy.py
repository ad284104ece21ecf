"""The cycle collector's thresholds during runs, and after them."""

from __future__ import annotations

import gc
import threading

from exportkit.gcpolicy import YOUNG_THRESHOLD, fewer_collections


def test_thresholds_rise_inside_and_come_back_after_the_last_run_leaves():
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
        with fewer_collections():  # a second run in the same process (a fleet worker)
            pass
        assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0]), "the first run is still inside"
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0, "what start-up allocated is collectable again"


def test_cycles_are_still_collected_inside():
    class Node:
        pass

    collected = threading.Event()
    with fewer_collections():
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        import weakref

        weakref.finalize(a, collected.set)
        del a, b
        gc.collect()
    assert collected.is_set()


def test_an_error_inside_restores_the_thresholds():
    before = gc.get_threshold()
    try:
        with fewer_collections():
            raise RuntimeError("a run that fails")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
