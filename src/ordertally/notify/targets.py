"""Where messages go, read from settings: operations channels as Apprise URLs and the buyer's
SMS gateway. A target's key names it in the send log without its secrets."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ordertally.core.settings import Settings
from ordertally.notify.errors import TargetsInvalid
from ordertally.notify.sms.aliyun import AliyunConfig
from ordertally.notify.templates import CASE_EVENTS, EVENTS, TEST_EVENT

# Apprise schemes we document, by the kind stored in the send log; any other Apprise URL works
# and is logged as kind "apprise".
KINDS = {
    "wecombot": "wecombot",
    "dingtalk": "dingtalk",
    "mailto": "email",
    "mailtos": "email",
    "json": "json",
    "jsons": "json",
}
SMS_KEY = "sms:{provider}"
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,60}$")


@dataclass(frozen=True, slots=True)
class OpsTarget:
    key: str
    kind: str
    url: str
    events: frozenset[str]
    lang: str
    # A WeCom/DingTalk entry's own card webhook (a relay, or a local sink): replaces the
    # platform address the Apprise URL implies when case cards are posted (notify/cards.py).
    webhook: str | None = None

    def wants(self, event_type: str) -> bool:
        return event_type in self.events


@dataclass(frozen=True, slots=True)
class SmsTarget:
    key: str
    provider: str
    template_codes: dict[str, str]
    lang: str

    def wants(self, event_type: str) -> bool:
        return bool(self.template_codes.get(event_type))


def url_key(url: str) -> str:
    """A stable name for an unnamed Apprise URL: its scheme and a hash (never the URL)."""
    scheme = url.partition("://")[0].lower()
    return f"{scheme}:{hashlib.sha256(url.encode()).hexdigest()[:16]}"


def ops_targets(settings: Settings, *, case_events: bool = False) -> list[OpsTarget]:
    """The configured operations channels, checked (a bad entry raises TargetsInvalid). An
    entry may also list exception case events (CASE_EVENTS), which only the workbench plans."""
    targets: list[OpsTarget] = []
    for index, entry in enumerate(settings.notify_ops_targets):
        url = entry.get("url")
        if not isinstance(url, str) or "://" not in url:
            raise TargetsInvalid(f"notify_ops_targets[{index}]: url must be an Apprise URL")
        scheme = url.partition("://")[0].lower()
        events = entry.get("events", list(EVENTS))
        events = [events] if isinstance(events, str) else events
        wanted = set(EVENTS) if "*" in events else set(events)
        unknown = sorted(wanted - set(EVENTS) - set(CASE_EVENTS))
        wanted -= set(CASE_EVENTS) - (set(CASE_EVENTS) if case_events else set())
        if unknown:
            raise TargetsInvalid(
                f"notify_ops_targets[{index}]: unknown events {unknown}; known: {list(EVENTS)}"
            )
        lang = entry.get("lang", settings.notify_default_lang)
        if lang not in ("zh", "en"):
            raise TargetsInvalid(f"notify_ops_targets[{index}]: lang must be zh or en")
        name = entry.get("name")
        if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
            raise TargetsInvalid(
                f"notify_ops_targets[{index}]: name must be 1-60 of letters, digits, _ . : -"
            )
        webhook = entry.get("webhook")
        if webhook is not None and (
            not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))
        ):
            raise TargetsInvalid(f"notify_ops_targets[{index}]: webhook must be an http(s) URL")
        key = f"ops:{name}" if name else url_key(url)
        if any(t.key == key for t in targets):
            raise TargetsInvalid(f"notify_ops_targets[{index}]: duplicate target {key}")
        targets.append(
            OpsTarget(key, KINDS.get(scheme, "apprise"), url, frozenset(wanted), str(lang), webhook)
        )
    return targets


def sms_target(settings: Settings) -> SmsTarget | None:
    """The buyer SMS gateway, or None when off or not fully configured."""
    if settings.notify_sms_provider != "aliyun" or AliyunConfig.from_settings(settings) is None:
        return None
    codes = {e: c for e, c in settings.aliyun_sms_template_codes.items() if e in EVENTS and c}
    return SmsTarget(SMS_KEY.format(provider="aliyun"), "aliyun", codes, settings.notify_sms_lang)


def case_targets(settings: Settings, event_type: str) -> list[OpsTarget]:
    """The operations channels whose entry lists this exception case event (or "*")."""
    out: list[OpsTarget] = []
    for index, entry in enumerate(settings.notify_ops_targets):
        events = entry.get("events", [])
        events = [events] if isinstance(events, str) else events
        if event_type in events or "*" in events:
            out.append(ops_targets(settings, case_events=True)[index])
    return out


def all_keys(settings: Settings) -> list[str]:
    """Every configured target's key (for the test endpoint)."""
    keys = [t.key for t in ops_targets(settings)]
    sms = sms_target(settings)
    return [*keys, sms.key] if sms else keys


__all__ = ["EVENTS", "TEST_EVENT", "OpsTarget", "SmsTarget", "ops_targets", "sms_target"]
