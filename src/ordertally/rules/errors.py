"""Errors of the rules domain, each with its HTTP status and stable code."""

from ordertally.core.errors import OrdertallyError


class RuleError(OrdertallyError):
    status = 409
    code = "rule.error"
    title = "Rule error"


class ConditionInvalid(RuleError):
    status = 422
    code = "rule.condition_invalid"
    title = "The rule's condition or trigger is not valid"


class ActionInvalid(RuleError):
    status = 422
    code = "rule.action_invalid"
    title = "The rule's actions are not valid"


class RuleNotFound(RuleError):
    status = 404
    code = "rule.not_found"
    title = "Rule not found"


class RuleExists(RuleError):
    status = 409
    code = "rule.exists"
    title = "A rule with this code exists"


class PlanInvalid(RuleError):
    status = 422
    code = "rule.purchase_plan_invalid"
    title = "The purchase plan is not valid"


class PlanNotFound(RuleError):
    status = 404
    code = "rule.purchase_plan_not_found"
    title = "Purchase plan not found"


class TemplateUnknown(RuleError):
    status = 422
    code = "rule.template_unknown"
    title = "No built-in template has this code"
