"""Bounded waits for tests: poll with a deadline, never a bare sleep."""

from __future__ import annotations

import time

import pytest


def wait_until(predicate, what: str, timeout: float = 30, every: float = 0.1):
    """Poll `predicate` until it returns something true (and return it); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting until {what}")
        time.sleep(every)
