"""The rate limiter's windows in this process's memory count as `limits`' fixed windows do
(ADR 0051): a window opens at a key's first hit and lasts the limit's period, refused hits
count, one more hit is tested without counting, ended windows are swept."""

from __future__ import annotations

from limits import parse

from ordertally.core.edge import LocalWindows

T0 = 1_800_000_000.0


def test_a_window_counts_its_period_then_opens_anew() -> None:
    # Given 3 a minute for one address
    windows, item, key = LocalWindows(), parse("3/minute"), ("ip", 0, "198.51.100.1")
    # When it hits five times within the minute, then once when the window has ended
    within = [windows.hit(item, key, T0 + s) for s in (0, 1, 2, 3, 59.9)]
    assert windows.reset_time(key, T0 + 59.9) == T0 + 60
    after = windows.hit(item, key, T0 + 60)
    # Then three pass, two are refused, and the next window starts at its first hit
    assert within == [True, True, True, False, False]
    assert after is True
    assert windows.reset_time(key, T0 + 60) == T0 + 120


def test_test_counts_nothing_and_another_key_has_its_own_window() -> None:
    windows, item = LocalWindows(), parse("2/minute")
    failures, other = ("authfail", 0, "198.51.100.1"), ("authfail", 0, "198.51.100.2")
    # Given one hit, tests do not count
    windows.hit(item, failures, T0)
    assert [windows.test(item, failures, T0 + 1) for _ in range(5)] == [True] * 5
    # When a second hit fills the window
    windows.hit(item, failures, T0 + 2)
    # Then the key is refused until its window ends, and another key is not
    assert windows.test(item, failures, T0 + 3) is False
    assert windows.test(item, other, T0 + 3) is True
    assert windows.test(item, failures, T0 + 60) is True
    assert windows.reset_time(other, T0 + 3) == T0 + 3  # no window: nothing to wait for


def test_ended_windows_are_swept() -> None:
    # Given 1,000 addresses seen once with a 1-second limit
    windows, item = LocalWindows(), parse("5/second")
    for n in range(1000):
        windows.hit(item, ("ip", 0, f"10.0.{n // 256}.{n % 256}"), T0)
    # When a new window opens past the sweep interval
    windows.hit(item, ("ip", 0, "10.9.9.9"), T0 + LocalWindows.SWEEP_SECONDS + 1)
    # Then only that one is kept
    assert list(windows._windows) == [("ip", 0, "10.9.9.9")]
