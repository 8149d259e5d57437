"""The channel simulator's after-sale lists of Taobao (`taobao.refunds.receive.get` on
/router/rest), JD (`jingdong.pop.afs.soa.refundapply.queryPageList` on /routerjson) and Douyin
(`afterSale/List`): the records it holds (each platform's item as its API serves it, the
time the list filters on stamped when the record is held or advanced), requests checked for
their signature, window and page size, and answers in each platform's envelope. Errors use
each platform's error shape (TOP `error_response` {code, msg, sub_code}; JOS `error_response`
{code, zh_desc}; Douyin {code, msg, sub_code, sub_msg})."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ordertally.channels.adapters import aftersale_lists as api
from ordertally.channels.adapters.common import AdapterError, beijing_utc, to_beijing_string
from ordertally.core import clock
from ordertally.simkit.misbehaviour import Outage


def _taobao_error(code: int, msg: str, sub_code: str = "") -> dict[str, Any]:
    return {"error_response": {"code": code, "msg": msg, "sub_code": sub_code}}


def _jd_error(code: str, desc: str) -> dict[str, Any]:
    return {"error_response": {"code": code, "zh_desc": desc, "en_desc": desc}}


def _douyin_error(code: int, msg: str) -> dict[str, Any]:
    return {"code": code, "msg": msg, "sub_code": "isv.invalid-parameter", "sub_msg": msg}


@dataclass
class AfterSaleListSim:
    app_key: str = "sim-list-key"
    secret: str = "sim-list-secret"
    throttle: Outage = field(default_factory=Outage)
    # platform -> refund id -> (time the list filters on, the item)
    held: dict[str, dict[str, tuple[datetime, dict[str, Any]]]] = field(
        default_factory=lambda: {"taobao": {}, "jd": {}, "douyin": {}}
    )
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def hold(self, platform: str, item: dict[str, Any], at: datetime | None = None) -> str:
        """Hold a record (or its next version: same id), stamped changed `at` (default now)."""
        at = at or clock.now()
        item = copy.deepcopy(item)
        if platform == "taobao":
            key = str(item["refund_id"])
            item["modified"] = to_beijing_string(at)
        elif platform == "jd":
            key = str(item["id"])
            item["checkTime"] = to_beijing_string(at)
        elif platform == "douyin":
            key = str(item["aftersale_info"]["aftersale_id"])
            item["aftersale_info"]["update_time"] = int(at.timestamp())
        else:
            raise ValueError(f"no after-sale list for {platform}")
        self.held[platform][key] = (at, item)
        return key

    def _window(
        self, platform: str, start: datetime, end: datetime, page: int, size: int
    ) -> tuple[list[dict[str, Any]], int] | str:
        if end < start or end - start > api.MAX_WINDOW:
            return "the window is more than one day"
        if end > clock.now() - api.MIN_LAG:
            return "the window ends within 3 minutes of now"
        first = api.FIRST_PAGE[platform]
        if not 1 <= size <= api.PAGE_SIZES[platform] or page < first:
            return f"page >= {first}, page size 1..{api.PAGE_SIZES[platform]}"
        matching = sorted(
            ((at, key, item) for key, (at, item) in self.held[platform].items()),
            key=lambda x: (x[0], x[1]),
        )
        chosen = [item for at, _, item in matching if start <= at <= end]
        offset = (page - first) * size
        return copy.deepcopy(chosen[offset : offset + size]), len(chosen)

    def taobao(self, form: dict[str, str]) -> dict[str, Any]:
        self.requests.append(("taobao", dict(form)))
        if form.get("app_key") != self.app_key or form.get("sign") != api.sorted_md5_sign(
            form, self.secret
        ):
            return _taobao_error(25, "Invalid signature", "isv.invalid-signature")
        if form.get("method") != api.TAOBAO_API:
            return _taobao_error(22, "Invalid method")
        if self.throttle.take():
            return _taobao_error(7, "App Call Limited", "accesscontrol.limited-by-app-access-count")
        try:
            start = beijing_utc(form["start_modified"])
            end = beijing_utc(form["end_modified"])
            page, size = int(form.get("page_no") or 1), int(form.get("page_size") or 40)
        except (KeyError, ValueError, AdapterError):
            return _taobao_error(41, "Invalid arguments", "isv.invalid-parameter")
        found = self._window("taobao", start, end, page, size)
        if isinstance(found, str):
            return _taobao_error(41, found, "isv.invalid-parameter")
        items, total = found
        return {
            api.TAOBAO_RESPONSE: {
                "refunds": {"refund": items},
                "total_results": total,
                "has_next": page * size < total,
            }
        }

    def jd(self, form: dict[str, str]) -> dict[str, Any]:
        self.requests.append(("jd", dict(form)))
        if form.get("app_key") != self.app_key or form.get("sign") != api.sorted_md5_sign(
            form, self.secret
        ):
            return _jd_error("19", "签名无效 / invalid sign")
        if form.get("method") != api.JD_API:
            return _jd_error("20", "method not found")
        if self.throttle.take():
            return _jd_error("67", "调用频率超限 / calls too frequent")
        try:
            business = orjson.loads(form["360buy_param_json"])
            start = beijing_utc(business["checkTimeStart"])
            end = beijing_utc(business["checkTimeEnd"])
            page, size = int(business.get("pageIndex") or 1), int(business.get("pageSize") or 10)
        except (KeyError, ValueError, AdapterError, orjson.JSONDecodeError):
            return _jd_error("65", "参数错误 / invalid 360buy_param_json")
        found = self._window("jd", start, end, page, size)
        if isinstance(found, str):
            return _jd_error("65", found)
        items, total = found
        return {
            api.JD_RESPONSE: {
                "code": "0",
                "queryResult": {"success": True, "result": items, "totalCount": total},
            }
        }

    def douyin(self, query: dict[str, str]) -> dict[str, Any]:
        self.requests.append(("douyin", dict(query)))
        if query.get("app_key") != self.app_key or query.get("sign") != api.douyin_sign(
            {k: query.get(k, "") for k in api.DOUYIN_SIGNED}, self.secret
        ):
            return _douyin_error(30002, "签名校验失败 / invalid sign")
        if query.get("method") != api.DOUYIN_METHOD:
            return _douyin_error(30001, "method not found")
        if self.throttle.take():
            return _douyin_error(50002, "调用频率超限 / calls too frequent")
        try:
            business = orjson.loads(query["param_json"])
            start = datetime.fromtimestamp(int(business["update_start_time"]), UTC)
            end = datetime.fromtimestamp(int(business["update_end_time"]), UTC)
            page, size = int(business.get("page") or 0), int(business.get("size") or 10)
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
            return _douyin_error(40004, "参数错误 / invalid param_json")
        found = self._window("douyin", start, end, page, size)
        if isinstance(found, str):
            return _douyin_error(40004, found)
        items, total = found
        return {
            "code": 10000,
            "msg": "success",
            "sub_code": "",
            "sub_msg": "",
            "data": {
                "items": items,
                "has_more": (page + 1) * size < total,
                "total": total,
                "page": page,
                "size": size,
            },
        }
