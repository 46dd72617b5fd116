"""The isolated case runner behind the ONNX conformance runs (``graphdnn.testing.run_isolated``): crashes
and hangs are attributed to the case that caused them, and no other case's result is lost."""

import os
import time

from graphdnn.testing import run_isolated


def _case(i: int) -> tuple[str, str]:
    if i == 2:
        os._exit(3)  # a hard crash, as a segfaulting kernel would
    if i == 4:
        time.sleep(30)
    return "pass", str(i)


def test_crash_and_hang_are_isolated_and_attributed():
    results = run_isolated(7, _case, jobs=2, timeout=1.0)
    assert [r[0] for r in results] == ["pass", "pass", "crash", "pass", "timeout", "pass", "pass"]
    assert "exit code 3" in results[2][1]
    assert [r[1] for r in results if r[0] == "pass"] == ["0", "1", "3", "5", "6"]
