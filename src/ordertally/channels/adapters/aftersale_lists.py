"""The after-sale list APIs of Taobao (TOP `taobao.refunds.receive.get`), JD (JOS
`jingdong.pop.afs.soa.refundapply.queryPageList`) and Douyin (抖店 `afterSale/List`): signed
requests over HTTP, one page each; the answers are read by `aftersales.records`.

- Taobao and JD sign as Pinduoduo's POP router does (MD5 of secret + the sorted key/value
  pairs + secret, upper-case hex: `pinduoduo.sign`), form-posted to the account's base URL
  (`/router/rest` and `/routerjson`), times as Beijing-time strings.
- Douyin signs MD5 of secret + "app_key"… "method"… "param_json"… "timestamp"… "v"… + secret
  (lower-case hex), the business parameters as JSON with sorted keys, on the path of the API.

Windows and page sizes (tests/aftersales/fixtures/SOURCES.md and ADR 0035): Taobao by
modification time (start_modified/end_modified), page_no from 1, page_size <= 100; JD by
check time (checkTimeStart/End: when the application was decided), pageIndex from 1,
pageSize <= 50; Douyin by update time (update_start_time/update_end_time, unix seconds)
[unconfirmed], page from 0, size <= 100. Windows of at most one day, ending 3 minutes behind
our clock (none of the three lists a server-time API we call)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ordertally.channels.adapters.common import to_beijing_string
from ordertally.channels.adapters.pinduoduo import sign as sorted_md5_sign

TAOBAO_API = "taobao.refunds.receive.get"
TAOBAO_RESPONSE = "refunds_receive_get_response"
JD_API = "jingdong.pop.afs.soa.refundapply.queryPageList"
JD_RESPONSE = "jingdong_pop_afs_soa_refundapply_queryPageList_responce"  # JD's spelling
DOUYIN_API = "afterSale/List"
DOUYIN_PATH = "/afterSale/List"
DOUYIN_METHOD = "afterSale.List"
# The Refund fields asked of Taobao (the API's required `fields`).
TAOBAO_FIELDS = (
    "refund_id,tid,oid,total_fee,buyer_nick,seller_nick,created,modified,order_status,status,"
    "good_status,has_good_return,refund_fee,payment,reason,desc,title,num,company_name,sid,"
    "refund_phase,refund_version,sku,outer_id,operation_contraint"
)
MAX_WINDOW = timedelta(days=1)
MIN_LAG = timedelta(minutes=3)
PAGE_SIZES = {"taobao": 100, "jd": 50, "douyin": 100}
FIRST_PAGE = {"taobao": 1, "jd": 1, "douyin": 0}
# Taobao's error code 7 is "App Call Limited" (slow down).
TAOBAO_RATE_LIMIT_CODES = frozenset({7})


# The public parameters Douyin signs, in this order.
DOUYIN_SIGNED = ("app_key", "method", "param_json", "timestamp", "v")


def douyin_sign(params: dict[str, str], secret: str) -> str:
    """The open platform's MD5 signature of a request's public parameters."""
    joined = "".join(f"{k}{params[k]}" for k in DOUYIN_SIGNED)
    return hashlib.md5(f"{secret}{joined}{secret}".encode()).hexdigest()


def douyin_param_json(params: dict[str, Any]) -> str:
    """The business parameters as Douyin signs them: JSON, keys sorted, no spaces."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class AfterSaleListClient:
    """One platform's after-sale list over HTTP; base URL, key and secret come from the
    account (`config.client_id`, credential `client_secret`, `access_token`)."""

    def __init__(
        self,
        platform: str,
        http: httpx.AsyncClient,
        base_url: str,
        app_key: str,
        secret: str,
        access_token: str,
    ) -> None:
        if platform not in PAGE_SIZES:
            raise ValueError(f"no after-sale list client for {platform}")
        self.platform = platform
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.app_key = app_key
        self.secret = secret
        self.access_token = access_token

    async def page(
        self, start: datetime, end: datetime, *, page: int, page_size: int
    ) -> httpx.Response:
        """One page of the records changed in [start, end]."""
        size = min(page_size, PAGE_SIZES[self.platform])
        now = to_beijing_string(datetime.now(UTC))
        if self.platform == "taobao":
            form = {
                "method": TAOBAO_API,
                "app_key": self.app_key,
                "session": self.access_token,
                "timestamp": now,
                "format": "json",
                "v": "2.0",
                "sign_method": "md5",
                "fields": TAOBAO_FIELDS,
                "start_modified": to_beijing_string(start),
                "end_modified": to_beijing_string(end),
                "page_no": str(page),
                "page_size": str(size),
            }
            form["sign"] = sorted_md5_sign(form, self.secret)
            return await self.http.post(f"{self.base_url}/router/rest", data=form)
        if self.platform == "jd":
            business = {
                "checkTimeStart": to_beijing_string(start),
                "checkTimeEnd": to_beijing_string(end),
                "pageIndex": page,
                "pageSize": size,
            }
            form = {
                "method": JD_API,
                "app_key": self.app_key,
                "access_token": self.access_token,
                "timestamp": now,
                "v": "2.0",
                "360buy_param_json": json.dumps(business, separators=(",", ":")),
            }
            form["sign"] = sorted_md5_sign(form, self.secret)
            return await self.http.post(f"{self.base_url}/routerjson", data=form)
        query = {
            "app_key": self.app_key,
            "method": DOUYIN_METHOD,
            "param_json": douyin_param_json(
                {
                    "update_start_time": int(start.timestamp()),
                    "update_end_time": int(end.timestamp()),
                    "page": page,
                    "size": size,
                }
            ),
            "timestamp": now,
            "v": "2",
        }
        query["sign"] = douyin_sign(query, self.secret)
        query["sign_method"] = "md5"
        query["access_token"] = self.access_token
        return await self.http.post(f"{self.base_url}{DOUYIN_PATH}", params=query)
