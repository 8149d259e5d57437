"""Notifications: Apprise (WeCom, DingTalk, email, JSON webhooks), SMS gateways, templates."""
