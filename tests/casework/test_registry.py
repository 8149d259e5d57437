"""Every domain's case types are in the one registry: after-sales, rules and the order review
open cases of registered types with their own policy, never the fallback's."""

from ordertally.aftersales.lifecycle import EXCEPTION_CASE_TYPES
from ordertally.exceptions import registry
from ordertally.orders import review


def test_the_other_domains_case_types_are_registered() -> None:
    types = [*EXCEPTION_CASE_TYPES, review.CS_CASE, review.FINANCE_CASE, review.FINANCE_REQUEST]
    for case_type in types:
        assert registry.is_registered(case_type), case_type
        assert registry.lookup(case_type).label_zh != registry.FALLBACK.label_zh, case_type


def test_a_family_lends_its_policy_to_each_member_and_unknown_types_fall_back() -> None:
    held = registry.lookup("rule.amount_confirm")
    assert (held.type, held.label_en) == ("rule.amount_confirm", "Rule hit")
    assert registry.lookup("customer.brushing").label_en == "Customer risk"
    assert not registry.is_registered("nobody.registered")
    assert registry.lookup("nobody.registered").label_en == registry.FALLBACK.label_en
