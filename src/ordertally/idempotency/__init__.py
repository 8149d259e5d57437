"""Idempotency keys: stored responses and their replay, used by every domain's POST routes."""
