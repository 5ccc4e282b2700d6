"""The suite's own tools: what a test that gives up on a process reports."""

from __future__ import annotations

import sys
import time

import pytest

from conftest import Started, session_report


@pytest.mark.slow
def test_a_hung_process_is_reported_with_its_signal_masks_and_python_stack():
    """CI keeps no trace of a hang but the failure's text: it must say where the process was."""
    with Started([sys.executable, "-c", "import time\ndef parked():\n    time.sleep(120)\nparked()"]) as proc:
        until, report = time.monotonic() + 60, ""
        while "parked" not in report and time.monotonic() < until:  # py-spy sees it once its interpreter runs
            report = session_report(proc.pid)
    assert f"--- {proc.pid}:" in report and "SigBlk:" in report and "SigPnd:" in report
    assert "parked" in report, report  # its Python stack, by py-spy
