"""Structured cards for exception case notices on the two group-robot platforms, as the exact
JSON bodies their webhooks take, and where to post them.

- WeCom group robot (企业微信群机器人, "群机器人配置说明", developer.work.weixin.qq.com
  document path 91770): `msgtype: template_card` with `card_type: text_notice`. The document
  gives lengths per field ("建议不超过 N 个字"), which `fit` enforces so a long case type never
  gets the card cut or refused: source.desc 13, main_title.title 26, main_title.desc 30,
  emphasis_content.title 10, emphasis_content.desc 15, sub_title_text 112, at most 6
  horizontal_content_list items (keyname 5, value 26), at most 3 jump_list items (title 13);
  card_action is required for text_notice.
- DingTalk custom robot (钉钉自定义机器人, "自定义机器人发送群消息", open.dingtalk.com):
  `msgtype: actionCard` with title, markdown text and one whole-card button (singleTitle +
  singleURL). A robot with 加签 gets `timestamp` and `sign` (HmacSHA256 of "timestamp\\nsecret",
  base64, URL-encoded) on its webhook URL.

The card's facts (order, type, age, owner, link) come from the workbench as `CaseFacts`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, unquote

WECOM_WEBHOOK = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
DINGTALK_WEBHOOK = "https://oapi.dingtalk.com/robot/send"
# Target kinds that get a structured card for case events (the others get markdown).
CARD_KINDS = ("wecombot", "dingtalk")

# WeCom text_notice field lengths, in characters (see the module docstring).
WECOM_LIMITS = {
    "source.desc": 13,
    "main_title.title": 26,
    "main_title.desc": 30,
    "emphasis_content.title": 10,
    "emphasis_content.desc": 15,
    "sub_title_text": 112,
    "horizontal_content_list": 6,
    "horizontal_content_list.keyname": 5,
    "horizontal_content_list.value": 26,
    "jump_list": 3,
    "jump_list.title": 13,
}


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """What a case card shows (already localised by the workbench)."""

    case_id: int
    heading_zh: str
    heading_en: str
    order_no: str | None
    type_label: str
    side: str
    severity: str
    age: str
    owner: str
    due: str
    link: str
    markdown: str


def fit(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def wecom_text_notice(facts: CaseFacts) -> dict[str, Any]:
    """The WeCom group robot body: a `text_notice` template card."""
    lim = WECOM_LIMITS
    rows = [
        ("订单", facts.order_no or "-"),
        ("类型", facts.type_label),
        ("负责人", facts.owner),
        ("严重度", facts.severity),
        ("时限UTC", facts.due),
    ]
    return {
        "msgtype": "template_card",
        "template_card": {
            "card_type": "text_notice",
            "source": {"desc": "ordertally 异常", "desc_color": 0},
            "main_title": {
                "title": fit(
                    f"{facts.heading_zh} {facts.heading_en} #{facts.case_id}",
                    lim["main_title.title"],
                ),
                "desc": fit(facts.type_label, lim["main_title.desc"]),
            },
            "emphasis_content": {
                "title": fit(facts.age, lim["emphasis_content.title"]),
                "desc": fit("已开 Age", lim["emphasis_content.desc"]),
            },
            "sub_title_text": fit(
                f"Order {facts.order_no or '-'} · {facts.type_label} · owner {facts.owner}",
                lim["sub_title_text"],
            ),
            "horizontal_content_list": [
                {
                    "keyname": fit(key, lim["horizontal_content_list.keyname"]),
                    "value": fit(value, lim["horizontal_content_list.value"]),
                }
                for key, value in rows[: lim["horizontal_content_list"]]
            ],
            "jump_list": [
                {
                    "type": 1,
                    "url": facts.link,
                    "title": fit("查看 Open case", lim["jump_list.title"]),
                }
            ],
            "card_action": {"type": 1, "url": facts.link},
        },
    }


def dingtalk_action_card(facts: CaseFacts) -> dict[str, Any]:
    """The DingTalk robot body: a whole-card-jump `actionCard`."""
    return {
        "msgtype": "actionCard",
        "actionCard": {
            "title": f"{facts.heading_zh} {facts.heading_en} #{facts.case_id}",
            "text": facts.markdown,
            "btnOrientation": "0",
            "singleTitle": "查看 Open case",
            "singleURL": facts.link,
        },
    }


def body(kind: str, facts: CaseFacts) -> str:
    """The exact JSON text posted for a target of `kind` (one of CARD_KINDS)."""
    doc = wecom_text_notice(facts) if kind == "wecombot" else dingtalk_action_card(facts)
    return json.dumps(doc, ensure_ascii=False)


def is_card(kind: str, text: str) -> bool:
    """Whether a planned message body is a card of this kind (rows planned before cards
    existed hold markdown and still go through Apprise)."""
    return kind in CARD_KINDS and text.startswith('{"msgtype"')


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a card goes: the webhook URL, and the DingTalk signing secret if any."""

    url: str
    secret: str | None = None


def endpoint(kind: str, apprise_url: str, webhook: str | None = None) -> Endpoint:
    """The platform webhook of an Apprise `wecombot://KEY` or `dingtalk://[SECRET@]TOKEN/`
    URL; `webhook` (a target entry's own URL: a relay, or a local sink) replaces the platform's
    address but keeps the DingTalk secret."""
    rest = apprise_url.partition("://")[2].split("/")[0].split("?")[0]
    user, at, host = rest.rpartition("@")
    token = unquote(host)
    secret = unquote(user.partition(":")[0]) if at and user else None
    if kind == "wecombot":
        return Endpoint(webhook or f"{WECOM_WEBHOOK}?key={quote_plus(token)}")
    return Endpoint(webhook or f"{DINGTALK_WEBHOOK}?access_token={quote_plus(token)}", secret)


def signed_url(point: Endpoint, now_ms: int) -> str:
    """The URL to post to: with DingTalk's `timestamp` and `sign` when the robot signs."""
    if point.secret is None:
        return point.url
    to_sign = f"{now_ms}\n{point.secret}".encode()
    digest = hmac.new(point.secret.encode(), to_sign, hashlib.sha256).digest()
    sign = quote_plus(base64.b64encode(digest).decode())
    return f"{point.url}{'&' if '?' in point.url else '?'}timestamp={now_ms}&sign={sign}"
