"""Carrier adapters: one interface for waybills, tracking subscriptions, queries and pushes."""
