"""Payments: provider adapters, the notification inbox, apply-once logic, compensation queries,
manual recovery with two people, refunds and statement reconciliation."""
