"""The payment simulator fixtures of the payments suite, shared with the security replays."""

from tests.payments.test_compensation import simulator, wired  # noqa: F401
