"""Customers: one buyer across channels, their 90-day profile, tags and risk flags."""
