"""`python -m bench.search_data`: a realistic order set for the search benches, loaded into a
scratch PostgreSQL database with COPY (not the API), or into an SQLite file (`--sqlite PATH`),
with its ground truth.

Buyers with common surnames and the polyphonic ones (曾 单 解 仇 朴 区 查), mainland
addresses, mobile phones (one in ten stored as a platform sends it masked, 138****5678),
products, channels with platform ids, payments, waybills and dates over two years. The search
rows are built by the same code the consumer runs (search.service.doc_row over
search.tokens), in worker processes; the engine's index is built after the rows are in (the
GIN index on PostgreSQL; on SQLite the FTS5 table in one 'rebuild', its insert trigger off
meanwhile). A manifest (database URL, the PII key the tokens were made with, and ≥ 200 queries
with the order each must find, covering every query kind) goes to bench/results/ for
`python -m bench.search`. `--sqlite PATH --copy-of MANIFEST` copies a generated PostgreSQL
database (read only) into SQLite instead: the same orders, key and queries on both engines.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
TZ_OFFSET = timedelta(hours=8)  # Asia/Shanghai, the default merchant time zone
CHUNK = 20_000

# Surnames by rough frequency, with the polyphonic ones a search must read as surnames.
SURNAMES = (
    "王" * 10
    + "李" * 10
    + "张" * 9
    + "刘" * 8
    + "陈" * 7
    + "杨" * 5
    + "黄" * 4
    + "赵" * 4
    + "吴" * 3
    + "周" * 3
    + "徐" * 3
    + "孙" * 3
    + "马" * 2
    + "朱" * 2
    + "胡" * 2
    + "郭" * 2
    + "何" * 2
    + "高" * 2
    + "林" * 2
    + "罗" * 2
    + "曾" * 2
    + "单"
    + "解"
    + "仇"
    + "朴"
    + "区"
    + "查"
)
# The reading of each polyphonic surname (what a caller says), for the ground truth.
SURNAME_READING = {"曾": "zeng", "单": "shan", "解": "xie", "仇": "qiu", "朴": "piao", "区": "ou"}
SURNAME_READING |= {"查": "zha"}
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红玉兰海燕晓东春梅"
ADDRESSES = (
    ("上海市", "上海市", ("浦东新区", "徐汇区", "静安区"), ("世纪大道", "陆家嘴环路", "淮海中路")),
    ("北京市", "北京市", ("朝阳区", "海淀区", "东城区"), ("建国路", "中关村大街", "王府井大街")),
    ("广东省", "广州市", ("天河区", "越秀区", "海珠区"), ("体育西路", "中山五路", "江南大道")),
    ("广东省", "深圳市", ("南山区", "福田区", "宝安区"), ("科技园路", "深南大道", "新安路")),
    ("浙江省", "杭州市", ("西湖区", "上城区", "余杭区"), ("文三路", "延安路", "文一西路")),
    ("江苏省", "南京市", ("鼓楼区", "玄武区", "江宁区"), ("中山路", "珠江路", "双龙大道")),
    ("四川省", "成都市", ("武侯区", "锦江区", "高新区"), ("人民南路", "春熙路", "天府大道")),
    ("湖北省", "武汉市", ("武昌区", "洪山区", "江汉区"), ("中南路", "珞喻路", "解放大道")),
    ("云南省", "昆明市", ("五华区", "盘龙区", "官渡区"), ("青年路", "北京路", "关上路")),
    (
        "广西壮族自治区",
        "南宁市",
        ("青秀区", "兴宁区", "西乡塘区"),
        ("民族大道", "朝阳路", "大学路"),
    ),
)
PRODUCTS = (
    ("TEA-LJ-250", "西湖龙井 明前特级 250g", "龙井"),
    ("TEA-PE-357", "云南普洱 熟茶饼 357g", "普洱"),
    ("TEA-TGY-500", "安溪铁观音 浓香型 500g", "铁观音"),
    ("TEA-DHP-200", "武夷山大红袍 200g", "大红袍"),
    ("TEA-BLC-100", "洞庭碧螺春 100g", "碧螺春"),
    ("CUP-CER-01", "景德镇陶瓷杯 白瓷", "陶瓷杯"),
    ("CUP-THM-500", "不锈钢保温杯 500ml", "保温杯"),
    ("PH-CASE-15", "苹果手机壳 透明防摔", "手机壳"),
    ("HONEY-1KG", "秦岭土蜂蜜 1kg", "蜂蜜"),
    ("RICE-5KG", "五常大米 稻花香 5kg", "大米"),
    ("OIL-5L", "压榨花生油 5L", "花生油"),
    ("NUT-MIX-30", "每日坚果 混合装 30袋", "坚果"),
)
# The product master behind PRODUCTS (issue 22): brand (zh, en) and category (zh, en) with the
# category above it; search indexes them from the catalogue, loaded beside the orders.
BRANDS = {
    "TEA-LJ-250": ("狮峰", "Lion Peak", "tea-green"),
    "TEA-PE-357": ("大益", "Taetea", "tea-dark"),
    "TEA-TGY-500": ("八马", "Bama Tea", "tea-oolong"),
    "TEA-DHP-200": ("武夷星", "Wuyi Star", "tea-oolong"),
    "TEA-BLC-100": ("吴裕泰", "Wuyutai", "tea-green"),
    "CUP-CER-01": ("红叶", "Hongye", "teaware"),
    "CUP-THM-500": ("象印", "Zojirushi", "drinkware"),
    "PH-CASE-15": ("倍思", "Baseus", "phone"),
    "HONEY-1KG": ("冠生园", "Guanshengyuan", "food"),
    "RICE-5KG": ("十月稻田", "Shiyue Daotian", "grain"),
    "OIL-5L": ("鲁花", "Luhua", "grain"),
    "NUT-MIX-30": ("三只松鼠", "Three Squirrels", "snacks"),
}
BRAND_READING = {"大益": "dayi", "八马": "bama", "武夷星": "wuyixing", "十月稻田": "shiyuedaotian"}
CATEGORIES = {  # code: (name, name_en, parent code)
    "tea": ("茶叶", "Tea", None),
    "tea-green": ("绿茶", "Green tea", "tea"),
    "tea-dark": ("黑茶", "Dark tea", "tea"),
    "tea-oolong": ("乌龙茶", "Oolong tea", "tea"),
    "teaware": ("茶具", "Teaware", None),
    "drinkware": ("水杯", "Drinkware", None),
    "phone": ("手机配件", "Phone accessories", None),
    "food": ("食品", "Food", None),
    "grain": ("粮油", "Grain and oil", "food"),
    "snacks": ("零食", "Snacks", "food"),
}


def catalogue_names(code: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(brands, category names) of a product as search indexes them."""
    brand, brand_en, category = BRANDS[code]
    names: list[str] = []
    walk: str | None = category
    while walk is not None:
        name, name_en, parent = CATEGORIES[walk]
        names += [name, name_en]
        walk = parent
    return (brand, brand_en), tuple(names)


CHANNELS = (("wechat_mini", "", 4), ("jd", "JD", 3), ("pdd", "PDD", 3), ("douyin", "DY", 2))
CARRIERS = (("SF", "shunfeng", 12), ("ZT", "zhongtong", 13), ("YT", "yuantong", 13))
STATUSES = (
    ("completed", 40),
    ("delivered", 10),
    ("shipped", 15),
    ("paid", 10),
    ("allocated", 5),
    ("pending_payment", 8),
    ("closed", 7),
    ("refunded", 5),
)
SHIPPED = frozenset({"completed", "delivered", "shipped"})
PAID = SHIPPED | {"paid", "allocated", "refunded"}
MASKED_SHARE = 0.1


def _weighted(rng: random.Random, table: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    return rng.choices(table, weights=[row[-1] for row in table])[0]


def _phone(rng: random.Random) -> str:
    return f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"


def _fields() -> tuple[list[str], list[str], list[str]]:
    from ordertally.orders.models import OrderLine, SalesOrder
    from ordertally.search.models import SearchDoc

    return (
        [c.name for c in SalesOrder.__table__.columns],
        [c.name for c in OrderLine.__table__.columns],
        [c.name for c in SearchDoc.__table__.columns],
    )


def generate_chunk(args: tuple[int, int, int, float, float]) -> dict[str, Any]:
    """Orders start..start+count (ids from 1), dated between two instants in id order."""
    start, count, seed, t0, t1 = args
    import warnings

    warnings.filterwarnings("ignore")
    import orjson

    from ordertally.core.crypto import get_cipher
    from ordertally.orders.contact import PII_ADDRESS, PII_NAME, PII_PHONE, mask_name
    from ordertally.search import service, tokens

    cipher = get_cipher()
    rng = random.Random(seed)
    so_cols, line_cols, doc_cols = _fields()
    orders: list[tuple[Any, ...]] = []
    lines: list[tuple[Any, ...]] = []
    docs: list[tuple[Any, ...]] = []
    truth: list[dict[str, Any]] = []
    line_id = start * 2
    span = t1 - t0
    for i in range(start, start + count):
        created = datetime.fromtimestamp(t0 + span * (i / TOTAL[0]), UTC)
        surname = rng.choice(SURNAMES)
        given = "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))
        name = surname + given
        phone = _phone(rng)
        masked = rng.random() < MASKED_SHARE
        stored_phone = f"{phone[:3]}****{phone[-4:]}" if masked else f"+86{phone}"
        province, city, districts, streets = rng.choice(ADDRESSES)
        district, street = rng.choice(districts), rng.choice(streets)
        line1 = f"{street}{rng.randrange(1, 999)}号"
        channel, prefix, _ = _weighted(rng, CHANNELS)
        external = f"{prefix}{rng.randrange(10**15, 10**16)}" if prefix else None
        status = _weighted(rng, STATUSES)[0]
        picked = rng.sample(PRODUCTS, rng.choice((1, 1, 2)))
        order_no = f"OT{created:%y%m%d}{rng.randrange(10**12):012d}"
        waybill = carrier = None
        if status in SHIPPED:
            code, carrier, digits = _weighted(rng, CARRIERS)
            waybill = f"{code}{rng.randrange(10 ** (digits - 1), 10**digits)}"
        out_trade_no = txn = None
        if status in PAID and channel == "wechat_mini":
            out_trade_no = f"{order_no}P01"
            txn = f"4200000{rng.randrange(10**20, 10**21)}"
        price = rng.randrange(1000, 99900)
        total = price * len(picked)
        address = {
            "name": name,
            "phone": stored_phone,
            "province": province,
            "city": city,
            "district": district,
            "line1": line1,
            "postal_code": "200000",
        }
        row = {
            "id": i + 1,
            "order_no": order_no,
            "channel": channel,
            "external_id": external,
            "status": status,
            "version": 1,
            "currency": "CNY",
            "subtotal_minor": total,
            "discount_minor": 0,
            "total_minor": total,
            "base_currency": "CNY",
            "fx_rate": "1",
            "shipping_minor": 0,
            "tax_minor": 0,
            "fee_minor": 0,
            "base_total_minor": total,
            "customer_name_enc": cipher.encrypt(name, PII_NAME),
            "customer_name_masked": mask_name(name),
            "customer_phone_enc": cipher.encrypt(stored_phone, PII_PHONE),
            "customer_phone_bidx": cipher.blind_index(stored_phone, "phone"),
            "customer_phone_masked": f"{phone[:3]}****{phone[-4:]}",
            "customer_phone_last4": phone[-4:],
            "shipping_address_enc": cipher.encrypt(orjson.dumps(address).decode(), PII_ADDRESS),
            "ship_name_masked": mask_name(name),
            "ship_phone_masked": f"{phone[:3]}****{phone[-4:]}",
            "ship_province": province,
            "ship_city": city,
            "ship_district": district,
            "fingerprint": secrets.token_hex(16),
            "created_by": "bench",
            "payment_deadline_at": None,
            "waybill_nos": waybill or "",
            "created_at": created,
            "updated_at": created,
            "sub_status": None,
            "remark": None,
        }
        orders.append(tuple(row[c] for c in so_cols))
        for n, (code, title, _) in enumerate(picked, 1):
            line_id += 1
            values = {
                "id": line_id,
                "order_id": i + 1,
                "line_no": n,
                "sku": code,
                "quantity": 1,
                "unit_price_minor": price,
                "discount_minor": 0,
                "total_minor": price,
                "sku_name": title,
                "sku_name_en": None,
                "sku_spec": None,
                "sku_barcode": None,
            }
            lines.append(tuple(values[c] for c in line_cols))
        placed = (created + TZ_OFFSET).date()
        facts = tokens.OrderFacts(
            order_no=order_no,
            channel=channel,
            status=status,
            placed_on=placed,
            external_id=external,
            names=(name,),
            phones=(stored_phone,),
            address=(province, city, district, line1),
            skus=tuple((code, title) for code, title, _ in picked),
            brands=tuple(b for code, _, _ in picked for b in catalogue_names(code)[0]),
            categories=tuple(
                dict.fromkeys(c for code, _, _ in picked for c in catalogue_names(code)[1])
            ),
            waybills=(waybill,) if waybill else (),
            payment_ids=tuple(p for p in (out_trade_no, txn) if p),
            warehouses=("WH-SH",) if status in SHIPPED else (),
            carriers=(carrier,) if carrier else (),
        )
        doc = service.doc_row(facts, SimpleNamespace(**row), created)  # type: ignore[arg-type]
        doc["indexed_at"] = created
        docs.append(tuple(doc[c] for c in doc_cols))
        if rng.random() < TRUTH_SHARE[0]:
            truth.append(
                {
                    "order_no": order_no,
                    "name": name,
                    "surname": surname,
                    "given": given,
                    "phone": phone,
                    "masked": masked,
                    "date": placed.isoformat(),
                    "external_id": external,
                    "waybill": waybill,
                    "out_trade_no": out_trade_no,
                    "txn": txn,
                    "sku": picked[0][0],
                    "word": picked[0][2],
                    "brand": BRANDS[picked[0][0]][0],
                    "brand_en": BRANDS[picked[0][0]][1],
                    "category": CATEGORIES[BRANDS[picked[0][0]][2]][0],
                    "city": city,
                    "district": district,
                    "street": street,
                }
            )
    return {"orders": orders, "lines": lines, "docs": docs, "truth": truth}


TOTAL = [1]
TRUTH_SHARE = [0.001]
# Kinds whose facts alone match several orders at 1M (a last four is shared by ~100 orders, a
# product, brand or category by one order in five to twenty, a common name on one street by
# dozens): "every term, newest first" has nothing to rank those matches by, so whether the
# expected one is among the first five is luck (hit@5 30-70% per kind at 1M). A caller also
# says when (issue 16's own example: 张三 5678 20260125): these queries carry the order's
# date, as the other kinds with a date do.
DATED_KINDS = (
    "product word+last4",
    "brand+last4",
    "brand pinyin+last4",
    "brand English+last4",
    "category+name",
    "address+name",
)


def dated(kind: str, q: str, date_iso: str) -> tuple[str, str]:
    """A query of DATED_KINDS with its order's merchant-local date: (kind, query)."""
    return f"{kind}+date", f"{q} {date_iso.replace('-', '')}"


def _pinyin(t: dict[str, Any]) -> str:
    from pypinyin import lazy_pinyin

    surname = SURNAME_READING.get(t["surname"]) or "".join(lazy_pinyin(t["surname"]))
    return surname + "".join(lazy_pinyin(t["given"]))


def queries(truth: list[dict[str, Any]], today: str) -> list[dict[str, Any]]:
    """Every query kind, from the ground truth: each with the order it must find in the top
    five (`exact`: it must come first)."""
    rng = random.Random(7)
    out: list[dict[str, Any]] = []
    recent = [t for t in truth if t["date"] > f"{int(today[:4]) - 1}{today[4:]}"]

    def add(kind: str, q: str, t: dict[str, Any], exact: bool = False) -> None:
        if kind in DATED_KINDS:
            kind, q = dated(kind, q, t["date"])
        out.append({"kind": kind, "q": q, "expect": t["order_no"], "exact": exact})

    def some(pool: list[dict[str, Any]], n: int = 14) -> list[dict[str, Any]]:
        return rng.sample(pool, min(n, len(pool)))

    plain = [t for t in truth if not t["masked"]]
    for t in some(truth):
        add("name+last4", f"{t['name']} {t['phone'][-4:]}", t)
    for t in some(truth):
        add("pinyin+last4", f"{_pinyin(t)} {t['phone'][-4:]}", t)
    for t in some([t for t in truth if t["surname"] in SURNAME_READING]):
        add("polyphonic pinyin+last4", f"{_pinyin(t)} {t['phone'][-4:]}", t)
    for t in some(truth):
        initials = "".join(s[0] for s in [SURNAME_READING.get(t["surname"], _pinyin(t))])
        from pypinyin import lazy_pinyin

        initials += "".join(p[0] for p in lazy_pinyin(t["given"]))
        add("initials+last4+date", f"{initials} {t['phone'][-4:]} {t['date'].replace('-', '')}", t)
    for t in some([t for t in truth if any(x in _pinyin(t) for x in ("zh", "sh", "ch", "ng"))]):
        near = _pinyin(t).replace("zh", "z").replace("sh", "s").replace("ch", "c")
        near = near.replace("ng", "n")
        add("near-miss pinyin+last4", f"{near} {t['phone'][-4:]}", t)
    for t in some(plain):
        add("phone", t["phone"], t, exact=True)
    for t in some(plain, 8):
        p = t["phone"]
        add("phone +86 spaced", f"+86 {p[:3]} {p[3:7]} {p[7:]}", t, exact=True)
    for t in some(truth):
        p = t["phone"]
        add("masked phone+name", f"{p[:3]}****{p[-4:]} {t['name']}", t)
    for t in some([t for t in truth if t["masked"]]):
        p = t["phone"]
        add("platform-masked record", f"{p[:3]}****{p[-4:]} {t['date'].replace('-', '')}", t)
    for t in some(truth, 8):
        add("first3+last4 masked", f"{t['phone'][:3]}****{t['phone'][-4:]}", t)
    for t in some(truth, 10):
        add("date+name", f"{t['date']} {t['name']}", t)
    for t in some(recent, 8):
        m, d = int(t["date"][5:7]), int(t["date"][8:10])
        add("月日+name", f"{m}月{d}日 {t['name']}", t)
    for t in some(recent, 6):
        m, d = int(t["date"][5:7]), int(t["date"][8:10])
        add("m/d+name", f"{m}/{d} {t['name']}", t)
    for t in some(truth):
        add("order no", t["order_no"], t, exact=True)
    for t in some(truth):
        add("order no last 8", t["order_no"][-8:], t)
    for t in some([t for t in truth if t["external_id"]]):
        add("platform id", t["external_id"], t)
    for t in some([t for t in truth if t["waybill"]]):
        add("waybill", t["waybill"], t, exact=True)
    for t in some([t for t in truth if t["out_trade_no"]], 8):
        add("out_trade_no", t["out_trade_no"], t)
    for t in some([t for t in truth if t["txn"]], 8):
        add("transaction id", t["txn"], t)
    for t in some(truth, 10):
        add("sku+name", f"{t['sku']} {t['name']}", t)
    for t in some(truth, 10):
        add("product word+last4", f"{t['word']} {t['phone'][-4:]}", t)
    for t in some(truth, 10):
        add("brand+last4", f"{t['brand']} {t['phone'][-4:]}", t)
    for t in some(truth, 10):
        from pypinyin import lazy_pinyin

        reading = BRAND_READING.get(t["brand"]) or "".join(lazy_pinyin(t["brand"]))
        add("brand pinyin+last4", f"{reading} {t['phone'][-4:]}", t)
    for t in some(truth, 10):
        add("brand English+last4", f"{t['brand_en']} {t['phone'][-4:]}", t)
    for t in some(truth, 10):
        add("category+name", f"{t['category']} {t['name']}", t)
    for t in some(truth, 10):
        add("address+name", f"{t['district'][:2]} {t['street']} {t['name']}", t)
    for t in some(truth, 10):
        add("city+name+last4", f"{t['city'].rstrip('市')} {t['name']} {t['phone'][-4:]}", t)
    return out


def _catalogue_rows(now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The categories (parents first, ids from 1) and SKUs behind PRODUCTS."""
    ids = {code: n for n, code in enumerate(CATEGORIES, 1)}
    categories = [
        {
            "id": ids[code],
            "code": code,
            "name": name,
            "name_en": name_en,
            "parent_id": ids[parent] if parent else None,
            "created_at": now,
        }
        for code, (name, name_en, parent) in CATEGORIES.items()
    ]
    skus = [
        {
            "code": code,
            "name": title,
            "name_en": "",
            "active": True,
            "brand": BRANDS[code][0],
            "brand_en": BRANDS[code][1],
            "category_id": ids[BRANDS[code][2]],
        }
        for code, title, _ in PRODUCTS
    ]
    return categories, skus


async def copy_postgres(url: str, chunks: Iterable[dict[str, Any]], total: int) -> dict[str, float]:
    """COPY the chunks into a migrated PostgreSQL database; the GIN index is built once after
    the last chunk. Seconds of COPY and of the GIN build, and the index's bytes."""
    import asyncpg

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    so_cols, line_cols, doc_cols = _fields()
    timing = {"copy": 0.0}
    try:
        categories, skus = _catalogue_rows(datetime.now(UTC))
        for table, rows in (("category", categories), ("sku", skus)):
            columns = list(rows[0])
            await conn.copy_records_to_table(
                table, records=[tuple(r[c] for c in columns) for r in rows], columns=columns
            )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('category', 'id'), "
            "(SELECT max(id) FROM category))"
        )
        await conn.execute("DROP INDEX IF EXISTS hand_search_doc_tsv")
        done = 0
        for part in chunks:
            started = time.perf_counter()
            await conn.copy_records_to_table("sales_order", records=part["orders"], columns=so_cols)
            await conn.copy_records_to_table("order_line", records=part["lines"], columns=line_cols)
            await conn.copy_records_to_table("search_doc", records=part["docs"], columns=doc_cols)
            timing["copy"] += time.perf_counter() - started
            done += len(part["orders"])
            print(f"  {done}/{total} orders loaded", file=sys.stderr, flush=True)
        started = time.perf_counter()
        await conn.execute("SET maintenance_work_mem = '2GB'")
        await conn.execute(
            "CREATE INDEX hand_search_doc_tsv ON search_doc USING gin (hand_tsv) "
            "WITH (fastupdate = off)"
        )
        timing["index"] = time.perf_counter() - started
        for table in ("sales_order", "order_line"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        await conn.execute("ANALYZE sales_order; ANALYZE order_line; ANALYZE search_doc")
        timing["size_bytes"] = float(
            await conn.fetchval("SELECT pg_total_relation_size('search_doc')")
        )
    finally:
        await conn.close()
    return timing


# The FTS5 table's insert trigger: dropped for the load, the index built from the table in one
# pass ('rebuild'), then the trigger put back as the migration wrote it.
FTS_INSERT_TRIGGER = "hand_search_doc_ai"


class _SqliteInsert:
    """An executemany INSERT of some columns of a table, with each value converted as
    SQLAlchemy would bind it on SQLite (UTC datetimes as text, booleans as 0/1)."""

    def __init__(self, table: Any, columns: list[str]) -> None:
        from sqlalchemy.dialects import sqlite

        dialect = sqlite.dialect()
        self.sql = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})"
        )
        found = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
        self.convert = [(i, f) for i, f in enumerate(found) if f is not None]

    def run(self, cursor: Any, records: Iterable[tuple[Any, ...]]) -> None:
        convert = self.convert

        def rows() -> Iterator[list[Any]]:
            for record in records:
                row = list(record)
                for i, f in convert:
                    row[i] = f(row[i])
                yield row

        cursor.executemany(self.sql, rows())


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ValueError(f"not an SQLite file: {url}")
    return Path(database)


def load_sqlite(url: str, chunks: Iterable[dict[str, Any]], total: int) -> dict[str, float]:
    """Insert the chunks into a migrated SQLite file (executemany, one transaction a chunk,
    journal and fsync off for the load only); the FTS5 index is built once after the last
    chunk. Seconds of inserts and of the FTS5 build, and the index's bytes (table + FTS5)."""
    import sqlite3

    from ordertally.catalog.models import Category, Sku
    from ordertally.core.db import table_of
    from ordertally.orders.models import OrderLine, SalesOrder
    from ordertally.search.models import SearchDoc

    so_cols, line_cols, doc_cols = _fields()
    conn = sqlite3.connect(_sqlite_path(url), isolation_level=None)
    timing = {"copy": 0.0}
    try:
        cur = conn.cursor()
        for pragma in (
            "journal_mode=OFF",
            "synchronous=OFF",
            "foreign_keys=OFF",
            "temp_store=MEMORY",
            "cache_size=-1048576",  # 1 GiB
            "locking_mode=EXCLUSIVE",
        ):
            cur.execute(f"PRAGMA {pragma}")
        trigger = cur.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?",
            (FTS_INSERT_TRIGGER,),
        ).fetchone()[0]
        cur.execute(f"DROP TRIGGER {FTS_INSERT_TRIGGER}")
        categories, skus = _catalogue_rows(datetime.now(UTC))
        cur.execute("BEGIN")
        for model, rows in ((Category, categories), (Sku, skus)):
            columns = list(rows[0])
            _SqliteInsert(table_of(model), columns).run(
                cur, (tuple(r[c] for c in columns) for r in rows)
            )
        cur.execute("COMMIT")
        inserts = (
            ("orders", _SqliteInsert(table_of(SalesOrder), so_cols)),
            ("lines", _SqliteInsert(table_of(OrderLine), line_cols)),
            ("docs", _SqliteInsert(table_of(SearchDoc), doc_cols)),
        )
        done = 0
        for part in chunks:
            started = time.perf_counter()
            cur.execute("BEGIN")
            for key, insert in inserts:
                insert.run(cur, part[key])
            cur.execute("COMMIT")
            timing["copy"] += time.perf_counter() - started
            done += len(part["orders"])
            print(f"  {done}/{total} orders loaded", file=sys.stderr, flush=True)
        started = time.perf_counter()
        cur.execute("INSERT INTO hand_search_fts(hand_search_fts) VALUES ('rebuild')")
        cur.execute("INSERT INTO hand_search_fts(hand_search_fts) VALUES ('optimize')")
        cur.execute(trigger)
        timing["index"] = time.perf_counter() - started
        cur.execute("ANALYZE")
        cur.execute("PRAGMA locking_mode=NORMAL")
        cur.execute("PRAGMA journal_mode=WAL")  # as the app runs it
        try:
            size = cur.execute(
                "SELECT sum(pgsize) FROM dbstat WHERE name = 'search_doc' "
                "OR name LIKE 'hand_search_fts%' OR name LIKE 'sqlite_autoindex_search_doc%'"
            ).fetchone()[0]
        except sqlite3.OperationalError:  # dbstat is a compile-time option
            size = 0
        timing["size_bytes"] = float(size or 0)
    finally:
        conn.close()
    timing["file_bytes"] = float(_sqlite_path(url).stat().st_size)
    return timing


def read_postgres(url: str, chunk: int = CHUNK) -> Iterator[dict[str, Any]]:
    """The orders, lines and index rows of a generated PostgreSQL database, in chunks of
    order ids, as generate_chunk makes them (read only)."""
    import asyncpg

    so_cols, line_cols, doc_cols = _fields()
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(dsn))
    try:
        last = loop.run_until_complete(
            conn.fetchval("SELECT coalesce(max(id), 0) FROM sales_order")
        )
        for low in range(0, last, chunk):
            part: dict[str, Any] = {}
            for key, table, columns, column in (
                ("orders", "sales_order", so_cols, "id"),
                ("lines", "order_line", line_cols, "order_id"),
                ("docs", "search_doc", doc_cols, "order_id"),
            ):
                rows = loop.run_until_complete(
                    conn.fetch(
                        f"SELECT {', '.join(columns)} FROM {table} "
                        f"WHERE {column} > $1 AND {column} <= $2 ORDER BY {column}, 1",
                        low,
                        low + chunk,
                    )
                )
                part[key] = [tuple(r) for r in rows]
            yield part
    finally:
        loop.run_until_complete(conn.close())
        loop.close()


def plan(orders: int, seed: int, now: datetime) -> list[tuple[int, int, int, float, float]]:
    """generate_chunk's arguments for `orders` orders dated over the two years before `now`."""
    t0, t1 = (now - timedelta(days=730)).timestamp(), (now - timedelta(minutes=5)).timestamp()
    TOTAL[0] = orders
    TRUTH_SHARE[0] = min(1.0, 4000 / orders)
    return [
        (start, min(CHUNK, orders - start), seed + start, t0, t1)
        for start in range(0, orders, CHUNK)
    ]


def generated(
    tasks: list[tuple[int, int, int, float, float]], processes: int, truth: list[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """The chunks, made in `processes` forked processes (0: in this one); their ground truth
    is appended to `truth` as they come."""
    if processes <= 0:
        for task in tasks:
            part = generate_chunk(task)
            truth.extend(part["truth"])
            yield part
        return
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for part in pool.imap(generate_chunk, tasks):
            truth.extend(part["truth"])
            yield part


def load(url: str, orders: int, *, seed: int = 2026, processes: int = 2) -> dict[str, Any]:
    """Generate `orders` orders into a migrated (empty) database, PostgreSQL or SQLite, with
    the PII key of this process's settings; the timings and the relevance queries."""
    now = datetime.now(UTC)
    tasks = plan(orders, seed, now)
    started = time.perf_counter()
    truth: list[dict[str, Any]] = []
    chunks = generated(tasks, processes, truth)
    if make_url(url).get_backend_name() == "sqlite":
        timing = load_sqlite(url, chunks, orders)
    else:
        timing = asyncio.run(copy_postgres(url, chunks, orders))
    timing["load"] = time.perf_counter() - started
    today = (now + TZ_OFFSET).date().isoformat()
    return {"timing": timing, "queries": queries(truth, today), "truth": truth}


def _manifest(
    url: str, key: str, orders: int, timing: dict[str, float], queries: list[dict[str, Any]]
) -> dict[str, Any]:
    engine = "sqlite" if make_url(url).get_backend_name() == "sqlite" else "pg"
    manifest: dict[str, Any] = {
        "url": url,
        "pii_key": key,
        "orders": orders,
        "engine": engine,
        "load_seconds": round(timing["load"], 1),
        "copy_seconds": round(timing["copy"], 1),
        ("gin_seconds" if engine == "pg" else "fts_seconds"): round(timing["index"], 1),
        "index_bytes": int(timing["size_bytes"]),
        "index_bytes_per_order": round(timing["size_bytes"] / orders),
    }
    if "file_bytes" in timing:
        manifest["file_bytes"] = int(timing["file_bytes"])
        manifest["file_bytes_per_order"] = round(timing["file_bytes"] / orders)
    manifest["queries"] = queries
    return manifest


def _report(manifest: dict[str, Any], path: Path) -> None:
    index = "GIN" if manifest["engine"] == "pg" else "FTS5"
    seconds = manifest.get("gin_seconds", manifest.get("fts_seconds"))
    orders = manifest["orders"]
    print(
        f"{orders} orders in {manifest['load_seconds']:.0f}s "
        f"({orders / max(manifest['load_seconds'], 0.1):.0f}/s; inserts "
        f"{manifest['copy_seconds']:.0f}s, {index} {seconds:.0f}s); search index "
        f"{manifest['index_bytes'] / 2**20:.0f} MiB ({manifest['index_bytes_per_order']} B/order)"
        + (
            f", file {manifest['file_bytes'] / 2**20:.0f} MiB "
            f"({manifest['file_bytes_per_order']} B/order)"
            if "file_bytes" in manifest
            else ""
        )
        + f"; {len(manifest['queries'])} queries -> {path}"
    )


def copy_to_sqlite(source: Path, name: str, sqlite_file: Path) -> None:
    """The rows of a generated PostgreSQL database (its manifest) into a new SQLite file, with
    the same PII key and relevance queries: the same data set on both engines."""
    from ordertally.ops import migrations

    origin = json.loads(source.read_text())
    if sqlite_file.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)
    url = f"sqlite+aiosqlite:///{sqlite_file.resolve()}"
    migrations.upgrade(url)
    started = time.perf_counter()
    timing = load_sqlite(url, read_postgres(origin["url"]), origin["orders"])
    timing["load"] = time.perf_counter() - started
    manifest = _manifest(url, origin["pii_key"], origin["orders"], timing, origin["queries"])
    manifest["copied_from"] = make_url(origin["url"]).database
    path = RESULTS / f"search-{name}.json"
    path.write_text(json.dumps(manifest, ensure_ascii=False, indent=1))
    _report(manifest, path)


async def _placed_dates(url: str, order_nos: list[str]) -> dict[str, str]:
    """order_no -> merchant-local placed date of these orders (read only)."""
    import asyncpg

    conn = await asyncpg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        rows = await conn.fetch(
            "SELECT s.order_no, d.placed_date FROM sales_order s "
            "JOIN search_doc d ON d.order_id = s.id WHERE s.order_no = ANY($1::text[])",
            order_nos,
        )
    finally:
        await conn.close()
    return {r["order_no"]: r["placed_date"] for r in rows}


def requery(path: Path) -> Path:
    """A manifest written before DATED_KINDS, with those queries as they are written now (the
    same orders, each with its date read from the loaded database, read only): a new file
    beside it; the other queries are kept as they are."""
    manifest = json.loads(path.read_text())
    wanted = [q["expect"] for q in manifest["queries"] if q["kind"] in DATED_KINDS]
    dates = asyncio.run(_placed_dates(manifest["url"], wanted))
    for q in manifest["queries"]:
        if q["kind"] in DATED_KINDS:
            q["kind"], q["q"] = dated(q["kind"], q["q"], dates[q["expect"]])
    out = path.with_name(f"{path.stem}-dated.json")
    out.write_text(json.dumps(manifest, ensure_ascii=False, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requery",
        default="",
        help="rewrite an older manifest's queries of the kinds that now carry a date (read only)",
    )
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--name", default="ordertally_search_bench")
    parser.add_argument(
        "--pg-url", default=os.environ.get("ORDERTALLY_TEST_PG_URL", DEFAULT_PG_URL)
    )
    parser.add_argument(
        "--sqlite",
        metavar="PATH",
        help="load an SQLite file (made anew, the app's migrations) instead of PostgreSQL",
    )
    parser.add_argument(
        "--copy-of",
        metavar="MANIFEST",
        help="with --sqlite: copy the rows of a database this command generated (its "
        "manifest) instead of generating: the same orders, key and queries",
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    if args.requery:
        print(requery(Path(args.requery)))
        return

    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.copy_of:
        if not args.sqlite:
            parser.error("--copy-of needs --sqlite PATH")
        copy_to_sqlite(Path(args.copy_of), args.name, Path(args.sqlite))
        return

    key = base64.b64encode(secrets.token_bytes(32)).decode()
    os.environ["ORDERTALLY_PII_KEY"] = key
    data_dir = RESULTS / f"search-{args.name}"
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["ORDERTALLY_DATA_DIR"] = str(data_dir)
    if args.sqlite:
        target = Path(args.sqlite).resolve()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        url = f"sqlite+aiosqlite:///{target}"
    else:
        url = make_url(args.pg_url).set(database=args.name).render_as_string(hide_password=False)
        admin = make_url(args.pg_url).set(drivername="postgresql").render_as_string(False)

        async def recreate() -> None:
            import asyncpg

            conn = await asyncpg.connect(admin)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{args.name}" WITH (FORCE)')
                await conn.execute(f'CREATE DATABASE "{args.name}"')
            finally:
                await conn.close()

        asyncio.run(recreate())
    os.environ["ORDERTALLY_DATABASE_URL"] = url
    subprocess.run([sys.executable, "-m", "ordertally", "migrate"], env={**os.environ}, check=True)

    loaded = load(url, args.orders, seed=args.seed, processes=args.processes)
    manifest = _manifest(url, key, args.orders, loaded["timing"], loaded["queries"])
    path = RESULTS / f"search-{args.name}.json"
    path.write_text(json.dumps(manifest, ensure_ascii=False, indent=1))
    _report(manifest, path)


if __name__ == "__main__":
    main()
