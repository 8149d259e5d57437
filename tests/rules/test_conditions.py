"""Conditions are compiled and type-checked when saved: CEL's own error comes back for a
condition that does not parse, names facts its trigger lacks, mixes types or is not a bool."""

import pytest

from ordertally.rules import actions, templates
from ordertally.rules.conditions import SAMPLE_FACTS, compile_condition
from ordertally.rules.errors import ActionInvalid, ConditionInvalid


def test_every_built_in_template_compiles_for_its_trigger() -> None:
    for t in templates.TEMPLATES:
        compiled = compile_condition(t.condition, t.trigger)
        assert compiled.trigger.name == t.trigger
        assert compiled.variables <= set(SAMPLE_FACTS[compiled.trigger.subject])
        assert actions.check(list(t.actions), compiled.trigger.subject) == list(t.actions)


@pytest.mark.parametrize(
    ("condition", "trigger", "message"),
    [
        ("order.total_minor >", "order.created", "does not compile: Failed to parse"),
        ("stock.available < 1", "schedule.channel", "names stock, which trigger"),
        ('order.total_minor > "100"', "order.created", "does not type-check: No such overload"),
        ("order.no_such_field > 1", "order.created", "does not type-check"),
        ("order.total_minor + 1", "order.created", "must be a bool; it gives int"),
        ("true", "order.teleported", "unknown trigger 'order.teleported'"),
    ],
)
def test_a_bad_condition_is_refused_with_its_error(
    condition: str, trigger: str, message: str
) -> None:
    with pytest.raises(ConditionInvalid) as refused:
        compile_condition(condition, trigger)
    assert message in refused.value.detail
    assert refused.value.code == "rule.condition_invalid"


def test_a_compiled_condition_reads_the_facts() -> None:
    c = compile_condition(
        "order.total_minor > 5 * customer.aov_90d_minor && 'vip' in customer.tags"
        " && !lines.exists(l, l.quantity > 100)",
        "order.paid",
    )
    assert c.variables == {"order", "customer", "lines"}
    facts = {
        "lines": [{"quantity": 1}],
        "order": {"total_minor": 60_000},
        "customer": {"aov_90d_minor": 10_000, "tags": ["vip"]},
    }
    assert c.matches(facts) is True
    assert c.matches({**facts, "customer": {"aov_90d_minor": 12_000, "tags": ["vip"]}}) is False
    # A fact missing at run time is "no match", never an exception in the consumer
    assert c.matches({"order": {}}) is False


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([], "at least one action"),
        ([{"kind": "teleport"}], "unknown kind 'teleport'"),
        ([{"kind": "hold"}], "reason is required"),
        ([{"kind": "hold", "reason": "x", "colour": "red"}], "unknown parameters ['colour']"),
        ([{"kind": "flag", "flag": 3}], "flag must be a str"),
        ([{"kind": "notify", "target": "ops:nobody", "message": "m"}], "no operations target"),
    ],
)
def test_bad_actions_are_refused(given: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ActionInvalid) as refused:
        actions.check(given, "order")
    assert message in refused.value.detail


def test_an_order_action_is_refused_on_a_scheduled_rule() -> None:
    with pytest.raises(ActionInvalid) as refused:
        actions.check([{"kind": "hold", "reason": "x"}], "stock")
    assert "needs an order-triggered rule" in refused.value.detail
