"""The simulators' misbehaviour model: validated rates, patches, seeded dice that replay the
same run, and outages scripted by count, by time or until healed."""

from __future__ import annotations

import time

import pytest

from ordertally.simkit.misbehaviour import Dice, Misbehaviour, Outage


def test_rates_outside_0_to_1_and_negative_delays_are_refused() -> None:
    for bad in ({"drop_rate": 1.5}, {"forge_rate": -0.1}, {"delay_seconds": -1.0}):
        with pytest.raises(ValueError):
            Misbehaviour(**bad)
    with pytest.raises(ValueError, match="reorder_window_seconds"):
        Misbehaviour().patched({"reorder_window_seconds": 0.0})


def test_a_patch_changes_only_the_fields_it_gives_and_the_view_shows_the_named_ones() -> None:
    # Given a misbehaviour with a duplicate rate and a seed
    base = Misbehaviour(duplicate_rate=0.2, seed=7)
    # When it is patched with a forge rate, an unset duplicate rate and no seed
    patched = base.patched({"forge_rate": 0.5, "duplicate_rate": None, "seed": None})
    # Then the duplicate rate stays, the seed is cleared and the original is untouched
    assert patched.view(("duplicate_rate", "forge_rate", "seed", "silent")) == {
        "duplicate_rate": 0.2,
        "forge_rate": 0.5,
        "seed": None,
        "silent": False,
    }
    assert (base.forge_rate, base.seed) == (0.0, 7)


def test_the_same_seed_replays_the_same_run_and_a_zero_rate_never_rolls() -> None:
    # Given two dice with the same seed
    first, second = Dice(5), Dice(5)
    # When one rolls zero rates in between and the other does not
    a = [first.hits(0.3) for _ in range(50)]
    b = []
    for _ in range(50):
        assert second.hits(0.0) is False
        b.append(second.hits(0.3))
    # Then both saw the same hits, and a rate of 1 always hits
    assert a == b and 5 < sum(a) < 30
    assert all(Dice(1).hits(1.0) for _ in range(20))


def test_an_outage_fails_the_next_requests_then_heals_itself() -> None:
    outage = Outage()
    outage.fail_next(2, "throttle")
    assert [outage.take() for _ in range(3)] == ["throttle", "throttle", None]
    assert outage.remaining == 0


def test_a_timed_outage_lasts_its_seconds_and_zero_ends_it() -> None:
    outage = Outage()
    outage.fail_for(0.2)
    assert outage.take() == "down"
    time.sleep(0.25)
    assert outage.take() is None
    outage.fail_for(3600)
    assert outage.take() == "down"
    outage.fail_for(0)
    assert outage.take() is None


def test_an_outage_until_healed_lasts_until_heal() -> None:
    outage = Outage()
    outage.fail_until_healed("500")
    assert [outage.take() for _ in range(3)] == ["500", "500", "500"]
    outage.heal()
    assert (outage.take(), outage.mode) == (None, None)
