"""Demo data for `make run`: warehouses, SKUs and ~200 orders across channels and states."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.auth import service as auth_service
from ordertally.catalog import service as catalog_service
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.fulfillment import service as fulfillment_service
from ordertally.fulfillment.carriers.base import TrackingEvent, TrackingStatus, TrackingUpdate
from ordertally.inventory import service as inventory_service
from ordertally.orders import service as orders_service
from ordertally.orders.schemas import OrderCreate
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind, Event

WAREHOUSES = [
    {
        "code": "SH01",
        "name": "上海嘉定仓",
        "province": "上海市",
        "city": "上海市",
        "latitude": 31.38,
        "longitude": 121.25,
        "priority": 1,
        "cost_factor": 1.0,
    },
    {
        "code": "GZ01",
        "name": "广州白云仓",
        "province": "广东省",
        "city": "广州市",
        "latitude": 23.39,
        "longitude": 113.30,
        "priority": 2,
        "cost_factor": 0.9,
    },
    {
        "code": "CD01",
        "name": "成都双流仓",
        "province": "四川省",
        "city": "成都市",
        "latitude": 30.58,
        "longitude": 103.92,
        "priority": 3,
        "cost_factor": 0.8,
    },
]
# Units received into each warehouse per SKU (CD01 is short of teapots on purpose).
RECEIPTS = {"SH01": 400, "GZ01": 300, "CD01": 150}
SKUS = [
    ("TEA-LJ-250", "西湖龙井 250g", "Longjing tea 250 g", "168.00"),
    ("TEA-PE-357", "普洱茶饼 357g", "Pu'er cake 357 g", "239.00"),
    ("CUP-CER-01", "青瓷茶杯", "Celadon tea cup", "39.90"),
    ("POT-YX-300", "宜兴紫砂壶 300ml", "Yixing clay teapot 300 ml", "499.00"),
    ("GIFT-BOX-M", "中秋礼盒", "Mid-autumn gift box", "288.00"),
    ("HONEY-500", "土蜂蜜 500g", "Wild honey 500 g", "88.00"),
]
# The product master behind SKUS: categories (a tree), specs, barcodes, weights, brands; the
# gift box is a bundle (组合装) of one tea and two cups, with no stock of its own.
CATEGORIES = [
    ("tea", "茶叶", "Tea", None),
    ("tea-green", "绿茶", "Green tea", "tea"),
    ("tea-dark", "黑茶", "Dark tea", "tea"),
    ("teaware", "茶具", "Teaware", None),
    ("food", "食品", "Food", None),
    ("gift", "礼盒", "Gift sets", None),
]
PRODUCTS = {
    "TEA-LJ-250": {
        "spec": {"净含量": "250g", "等级": "明前特级"},
        "spec_text": "250g / 明前特级",
        "barcode": "6903123450018",
        "unit": "罐",
        "weight_g": 300,
        "category": "tea-green",
        "brand": "狮峰",
        "brand_en": "Shifeng",
        "cost_minor": 9800,
        "min_price_minor": 14800,
    },
    "TEA-PE-357": {
        "spec": {"净含量": "357g", "年份": "2019"},
        "spec_text": "357g / 2019年",
        "barcode": "6903123450025",
        "unit": "饼",
        "weight_g": 380,
        "category": "tea-dark",
        "brand": "勐海",
        "brand_en": "Menghai",
        "cost_minor": 12000,
        "min_price_minor": 19900,
    },
    "CUP-CER-01": {
        "spec": {"颜色": "青色", "容量": "80ml"},
        "spec_text": "青色 / 80ml",
        "barcode": "6903123450032",
        "unit": "只",
        "weight_g": 120,
        "category": "teaware",
        "brand": "龙泉",
        "brand_en": "Longquan",
        "cost_minor": 1500,
        "min_price_minor": 2990,
    },
    "POT-YX-300": {
        "spec": {"泥料": "紫泥", "容量": "300ml"},
        "spec_text": "紫泥 / 300ml",
        "barcode": "6903123450049",
        "unit": "把",
        "weight_g": 450,
        "category": "teaware",
        "brand": "宜兴",
        "brand_en": "Yixing",
        "cost_minor": 22000,
        "min_price_minor": 39900,
    },
    "HONEY-500": {
        "spec": {"净含量": "500g"},
        "spec_text": "500g",
        "barcode": "6903123450056",
        "unit": "瓶",
        "weight_g": 650,
        "category": "food",
        "brand": "秦岭",
        "brand_en": "Qinling",
        "cost_minor": 4000,
        "min_price_minor": 6800,
    },
}
BUNDLES = {"GIFT-BOX-M": [("TEA-LJ-250", 1), ("CUP-CER-01", 2)]}
CHANNELS = ["douyin", "jd", "pinduoduo", "taobao", "wechat_mini", "shopify", "amazon"]
NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄涛", "周杰", "吴婷"]
PLACES = [
    ("上海市", "上海市", "浦东新区", "世纪大道100号"),
    ("广东省", "深圳市", "南山区", "科技园南路8号"),
    ("北京市", "北京市", "朝阳区", "建国路88号"),
    ("浙江省", "杭州市", "西湖区", "文三路90号"),
    ("四川省", "成都市", "武侯区", "天府大道北段1700号"),
]
# Where each demo order stops, and how often (out of 100).
PATHS: list[tuple[list[tuple[str, ActorKind]], int]] = [
    ([], 15),
    ([(Event.CANCEL, ActorKind.BUYER)], 5),
    ([(Event.PAYMENT_TIMEOUT, ActorKind.SCHEDULER)], 5),
    ([(Event.PAYMENT_SUCCEEDED, ActorKind.PAYMENT_CALLBACK)], 15),
    (
        [
            (Event.PAYMENT_SUCCEEDED, ActorKind.PAYMENT_CALLBACK),
            (Event.ALLOCATE, ActorKind.ALLOCATOR),
        ],
        10,
    ),
    (
        [
            (Event.PAYMENT_SUCCEEDED, ActorKind.PAYMENT_CALLBACK),
            (Event.ALLOCATE, ActorKind.ALLOCATOR),
            (Event.START_FULFILLMENT, ActorKind.WAREHOUSE),
            (Event.SHIP, ActorKind.WAREHOUSE),
        ],
        20,
    ),
    (
        [
            (Event.PAYMENT_SUCCEEDED, ActorKind.PAYMENT_CALLBACK),
            (Event.ALLOCATE, ActorKind.ALLOCATOR),
            (Event.START_FULFILLMENT, ActorKind.WAREHOUSE),
            (Event.SHIP, ActorKind.WAREHOUSE),
            (Event.DELIVER, ActorKind.CARRIER),
            (Event.COMPLETE, ActorKind.SCHEDULER),
        ],
        25,
    ),
    ([(Event.PAYMENT_SUCCEEDED, ActorKind.PAYMENT_CALLBACK), (Event.REFUND, ActorKind.FINANCE)], 5),
]


async def is_empty(db: Database) -> bool:
    """True when no warehouse exists yet (a fresh database)."""
    async with db.transaction(write=False) as session:
        return not await inventory_service.has_warehouses(session)


async def load(db: Database, orders: int = 200, seed: int = 7) -> str:
    """Create the demo catalogue, orders and an admin API key; returns the raw key."""
    rng = random.Random(seed)
    async with db.transaction() as session:
        await inventory_service.add_catalogue(
            session, [{**w, "active": True} for w in WAREHOUSES], []
        )
        for code, name, name_en, parent in CATEGORIES:
            await catalog_service.create_category(
                session, {"code": code, "name": name, "name_en": name_en, "parent": parent}
            )
        for code, name, name_en, _ in SKUS:
            values = {"code": code, "name": name, "name_en": name_en, "currency": "CNY"}
            if code in BUNDLES:
                await catalog_service.create_sku(
                    session,
                    {**values, "category": "gift", "unit": "盒", "spec_text": "龙井×1 + 茶杯×2"},
                    "demo",
                    [{"sku": c, "quantity": q} for c, q in BUNDLES[code]],
                )
            else:
                await catalog_service.create_sku(session, {**values, **PRODUCTS[code]}, "demo")
        for warehouse, units in RECEIPTS.items():
            for code, *_ in SKUS:
                if code in BUNDLES:
                    continue
                await inventory_service.record_movement(
                    session,
                    warehouse_code=warehouse,
                    sku=code,
                    kind="receipt",
                    quantity=units if code != "POT-YX-300" or warehouse != "CD01" else 5,
                    reason="demo opening stock",
                    actor="demo",
                )
        _, key = await auth_service.create_api_key(session, "demo-admin", "admin")
    weights = [w for _, w in PATHS]
    start = clock.now() - timedelta(days=14)
    for i in range(orders):
        at = start + timedelta(minutes=i * 14 * 24 * 60 // orders + rng.randint(0, 30))
        name = rng.choice(NAMES)
        phone = f"13{rng.randint(0, 9)}{rng.randint(10_000_000, 99_999_999)}"
        province, city, district, line1 = rng.choice(PLACES)
        lines = [
            {"sku": code, "quantity": rng.randint(1, 3), "unit_price": price}
            for code, _, _, price in rng.sample(SKUS, rng.randint(1, 3))
        ]
        channel = CHANNELS[i % len(CHANNELS)]
        cmd = OrderCreate.model_validate(
            {
                "channel": channel,
                "external_id": f"{channel.upper()}-{100000 + i}",
                "customer": {"name": name, "phone": phone},
                "shipping_address": {
                    "name": name,
                    "phone": phone,
                    "province": province,
                    "city": city,
                    "district": district,
                    "line1": line1,
                    "postal_code": "200000",
                },
                "lines": lines,
                "currency": "CNY",
                "discount": rng.choice(["0", "0", "10.00", "5.50"]),
            }
        )
        path = rng.choices([p for p, _ in PATHS], weights)[0]
        if not path:  # still awaiting payment: recent enough to be inside the payment window
            at = clock.now() - timedelta(minutes=rng.randint(1, 20))
        elif any(step == Event.SHIP for step, _ in path):  # old enough for its scans to be past
            at = min(at, clock.now() - timedelta(days=3, minutes=rng.randint(0, 600)))
        with clock.frozen(at):
            async with db.transaction() as session:
                snapshot, _ = await orders_service.create_order(
                    session,
                    cmd,
                    Actor(ActorKind.CHANNEL_SYNC, f"demo:{channel}"),
                    check_fingerprint=False,
                )
                for step, (transition, actor_kind) in enumerate(path, start=1):
                    clock.advance(
                        timedelta(minutes=35 if transition == Event.PAYMENT_TIMEOUT else step)
                    )
                    if transition in FULFILLMENT_STEPS:
                        await _fulfil(session, snapshot.order.id, transition, rng)
                        continue
                    evidence = "demo-refund" if actor_kind is ActorKind.FINANCE else None
                    await orders_service.transition(
                        session,
                        snapshot.order.order_no,
                        transition,
                        Actor(actor_kind, "demo", evidence_ref=evidence),
                    )
                if path and path[-1][0] == Event.SHIP:
                    await _track(session, snapshot.order.id, rng, delivered=False)
    return key


# Fulfillment steps go through the fulfillment service, so demo orders have real shipments,
# waybills and tracking timelines (the tracking page shows them).
FULFILLMENT_STEPS = frozenset({Event.ALLOCATE, Event.START_FULFILLMENT, Event.SHIP, Event.DELIVER})
COMPANIES = [("zhongtong", "7"), ("shunfeng", "SF"), ("yuantong", "YT"), ("yunda", "31")]
WAREHOUSE_ACTOR = Actor(ActorKind.WAREHOUSE, "demo-warehouse")


async def _fulfil(session: AsyncSession, order_id: int, step: str, rng: random.Random) -> None:
    if step == Event.ALLOCATE:
        await fulfillment_service.allocate(session, order_id)
        return
    shipments = await fulfillment_service.shipments_of(session, order_id)
    if step == Event.START_FULFILLMENT:
        await fulfillment_service.confirm(session, shipments[0].id, WAREHOUSE_ACTOR)
    elif step == Event.SHIP:
        for shipment in shipments:
            company, prefix = rng.choice(COMPANIES)
            number = prefix + "".join(rng.choice("0123456789") for _ in range(12))
            await fulfillment_service.ship(
                session, shipment.id, WAREHOUSE_ACTOR, waybill_no=number, company=company
            )
    elif step == Event.DELIVER:
        await _track(session, order_id, rng, delivered=True)


async def _track(session: AsyncSession, order_id: int, rng: random.Random, delivered: bool) -> None:
    """Carrier scans for each shipped parcel, as a push would bring them."""
    start = clock.now()
    for shipment in await fulfillment_service.shipments_of(session, order_id):
        city = rng.choice(["上海", "广州", "杭州", "武汉", "成都"])
        steps = [
            ("1", TrackingStatus.IN_TRANSIT, "【仓库】快件已揽收"),
            ("0", TrackingStatus.IN_TRANSIT, f"【{city}】快件已到达{city}转运中心"),
            ("0", TrackingStatus.IN_TRANSIT, f"【{city}】快件已发往目的地"),
        ]
        if delivered:
            steps += [
                ("5", TrackingStatus.OUT_FOR_DELIVERY, "快件派送中，请保持电话畅通"),
                ("3", TrackingStatus.DELIVERED, "已签收，签收人是本人，感谢使用"),
            ]
        events = tuple(
            TrackingEvent(
                occurred_at=start + timedelta(hours=5 * n),
                status=status,
                state_code=code,
                description=words,
                location=city,
            )
            for n, (code, status, words) in enumerate(steps)
        )
        update = TrackingUpdate(
            company=shipment.company,
            waybill_no=shipment.waybill_no or "",
            events=events,
            state=events[-1].status,
            state_code=events[-1].state_code,
        )
        await fulfillment_service.apply_tracking(session, update, source="push")
    clock.advance(timedelta(days=2))
