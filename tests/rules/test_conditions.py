"""Conditions are compiled and type-checked when saved: CEL's own error comes back for a
condition that does not parse, names facts its trigger lacks, mixes types or is not a bool."""

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertally.rules import actions, templates
from ordertally.rules.conditions import SAMPLE_FACTS, compile_condition, merged, prepare
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


# Conditions over every shape a projection must handle: fields, several facts, a fact used
# whole (comprehension, index), fields named in strings, a field used whole by a macro.
PROJECTED = (
    *(t.condition for t in templates.TEMPLATES if t.trigger.startswith("order.")),
    "order.total_minor > 5000000",
    "order.quantity > 200 || order.line_count > 30",
    "order.province == '西藏自治区' && order.total_minor > 100000",
    "order.skus.exists(s, s in ['RECALLED-1', 'RECALLED-2'])",
    "lines.exists(l, l.unit_price_minor < 1)",
    "'blacklist' in customer.tags || customer.returns_30d > 10",
    "'order.total_minor' == order.channel || stock['TEA-LJ-250'].available < 3",
    "has(customer.tags) && size(customer.risk_flags) > 0 && order . discount_ratio > 0.5",
    "lines.all(l, l.quantity <= order.quantity) && customer.known",
)


def test_a_projection_names_the_fields_a_condition_reads() -> None:
    reads = compile_condition(PROJECTED[-3], "order.paid").reads
    assert reads == {"order": frozenset({"channel"}), "stock": None}
    reads = compile_condition(PROJECTED[-1], "order.paid").reads
    assert reads == {"lines": None, "order": frozenset({"quantity"}), "customer": {"known"}}
    assert merged([{"order": frozenset({"a"})}, {"order": frozenset({"b"}), "lines": None}]) == {
        "order": {"a", "b"},
        "lines": None,
    }
    assert merged([{"order": None}, {"order": frozenset({"b"})}]) == {"order": None}


_number = st.integers(min_value=-(10**12), max_value=10**12)
_word = st.sampled_from(
    ["", "TEA-LJ-250", "RECALLED-1", "blacklist", "vip", "西藏自治区", "上海市"]
)


@st.composite
def _order_facts(draw: st.DrawFn) -> dict[str, Any]:
    facts = json.loads(json.dumps(SAMPLE_FACTS["order"]))
    for key, value in facts["order"].items():
        if isinstance(value, bool):
            facts["order"][key] = draw(st.booleans())
        elif isinstance(value, int):
            facts["order"][key] = draw(_number)
        elif isinstance(value, float):
            facts["order"][key] = draw(st.floats(0, 1))
        elif isinstance(value, str):
            facts["order"][key] = draw(_word)
        elif isinstance(value, list):
            facts["order"][key] = draw(st.lists(_word, max_size=3))
    facts["lines"] = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "sku": _word,
                    "quantity": _number,
                    "unit_price_minor": _number,
                    "amount_minor": _number,
                }
            ),
            max_size=3,
        )
    )
    for key, value in facts["customer"].items():
        if isinstance(value, bool):
            facts["customer"][key] = draw(st.booleans())
        elif isinstance(value, int):
            facts["customer"][key] = draw(_number)
        elif isinstance(value, list):
            facts["customer"][key] = draw(st.lists(_word, max_size=3))
    facts["stock"]["TEA-LJ-250"]["available"] = draw(_number)
    return facts


@settings(max_examples=150, deadline=None)
@given(facts=_order_facts())
def test_converting_only_what_the_rules_read_never_changes_a_result(facts: dict[str, Any]) -> None:
    compiled = [compile_condition(source, "order.paid") for source in PROJECTED]
    together = prepare(facts, merged([c.reads for c in compiled]))
    for c in compiled:
        whole = c.matches(prepare(facts))
        assert c.matches(prepare(facts, c.reads)) == whole, c.source
        assert c.matches(together) == whole, c.source
