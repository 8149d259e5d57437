"""Channels: platform adapters (webhooks, pulls, files) into one stream of canonical orders."""
