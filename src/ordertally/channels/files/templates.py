"""Templates of platform order exports: which header (as the platform exports it, in Chinese)
holds which canonical field, how dates are written and in which time zone, which status words
mean what, and whether the file has one row per line (order id repeated) or one row per order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from ordertally.channels.canonical import PlatformStatus
from ordertally.channels.files.errors import FileError


class Grouping(StrEnum):
    LINE_PER_ROW = "line_per_row"  # one row per order line, order fields repeated
    ORDER_PER_ROW = "order_per_row"  # one row per order (a single line)


# Canonical fields a template may map. Order-level fields are read from an order's first row.
ORDER_FIELDS = (
    "external_id",
    "status",
    "placed_at",
    "paid_at",
    "finished_at",
    "currency",
    "order_discount",
    "shipping",
    "tax",  # tax charged on top of the prices
    "fee",  # what the buyer paid for services on top (installation, delivery to the door...)
    "paid_total",  # the platform's own figure of what the buyer pays: checked, never used
    "buyer_name",
    "buyer_phone",
    "buyer_platform_id",
    "buyer_email",
    "receiver_name",
    "receiver_phone",
    "province",
    "city",
    "district",
    "street",
    "address",
    "postal_code",
)
LINE_FIELDS = (
    "line_id",
    "sku",
    "sku_fallback",
    "title",
    "quantity",
    "unit_price",
    "line_total",  # the line's amount where the export has no unit price (Pinduoduo)
    "line_discount",
    "category",
)
FIELDS = frozenset(ORDER_FIELDS + LINE_FIELDS)

# Status words every Chinese template understands, beside its own.
COMMON_STATUSES: dict[str, PlatformStatus] = {
    "待付款": PlatformStatus.UNPAID,
    "待支付": PlatformStatus.UNPAID,
    "待发货": PlatformStatus.PAID,
    "已付款": PlatformStatus.PAID,
    "已发货": PlatformStatus.SHIPPED,
    "已完成": PlatformStatus.DELIVERED,
    "交易成功": PlatformStatus.DELIVERED,
    "已签收": PlatformStatus.DELIVERED,
    "已关闭": PlatformStatus.CANCELLED,
    "交易关闭": PlatformStatus.CANCELLED,
    "已取消": PlatformStatus.CANCELLED,
    "已退款": PlatformStatus.REFUNDED,
    "退款成功": PlatformStatus.REFUNDED,
}

DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y年%m月%d日 %H:%M:%S",
    "%Y-%m-%d",
    "%Y/%m/%d",
)


@dataclass(frozen=True, slots=True)
class Template:
    """How one platform's order export maps to canonical orders."""

    name: str
    platform: str  # the platform the orders come from ("" = the account's platform)
    label: str  # for people, in Chinese and English
    columns: dict[str, tuple[str, ...]]  # canonical field -> accepted header texts
    required: frozenset[str]
    statuses: dict[str, PlatformStatus]
    grouping: Grouping = Grouping.LINE_PER_ROW
    timezone: str = "Asia/Shanghai"  # of timestamps written without an offset
    date_formats: tuple[str, ...] = DATE_FORMATS
    currency: str = "CNY"  # when the file has no currency column
    # Amount fields whose every present column is added up (a platform's several discount or
    # service-fee columns); the others take the first accepted header the file has.
    summed: frozenset[str] = frozenset()

    def headers_of(self, fieldname: str) -> tuple[str, ...]:
        return self.columns.get(fieldname, ())


def _statuses(own: dict[str, PlatformStatus]) -> dict[str, PlatformStatus]:
    return {**COMMON_STATUSES, **own}


P = PlatformStatus

# The templates are data: header texts as each platform's back office exports them.
TEMPLATES: dict[str, Template] = {
    # 抖店 (Douyin shop) 订单管理 → 导出 (standard report, one row per 子订单 / sub-order).
    "douyin": Template(
        name="douyin",
        platform="douyin",
        label="抖店订单导出 / Douyin shop order export",
        columns={
            "external_id": ("主订单编号",),
            "line_id": ("子订单编号",),
            "title": ("选购商品", "商品名称"),
            "sku": ("商家编码",),
            "sku_fallback": ("商品ID",),
            "quantity": ("商品数量",),
            # The platform's own export names the unit price 商品金额; older layouts 商品单价.
            "unit_price": ("商品单价", "商品金额"),
            "line_discount": ("商家优惠",),
            "shipping": ("运费",),
            # The main order's payable amount, repeated on each of its rows.
            "paid_total": ("订单应付金额",),
            "status": ("订单状态",),
            "placed_at": ("订单提交时间",),
            "paid_at": ("支付完成时间",),
            "finished_at": ("订单完成时间",),
            "receiver_name": ("收件人",),
            "receiver_phone": ("收件人手机号",),
            "province": ("省",),
            "city": ("市",),
            "district": ("区",),
            "street": ("街道",),
            "address": ("详细地址",),
            "category": ("商品类目",),
        },
        required=frozenset(
            {"external_id", "quantity", "unit_price", "status", "placed_at", "receiver_phone"}
        ),
        statuses=_statuses(
            {
                "备货中": P.PAID,
                "待发货": P.PAID,
                "部分发货": P.PAID,
                "已发货": P.SHIPPED,
                "已完成": P.DELIVERED,
                "已关闭": P.CANCELLED,
                "已取消": P.CANCELLED,
            }
        ),
    ),
    # 京东 (JD) 商家后台 订单查询 → 导出 (one row per item of an order).
    "jd": Template(
        name="jd",
        platform="jd",
        label="京东订单导出 / JD order export",
        columns={
            "external_id": ("订单号",),
            "sku": ("货号",),  # the merchant's own code
            "sku_fallback": ("商品ID",),  # JD's item id, when the export has no 货号
            "title": ("商品名称",),
            "quantity": ("订购数量",),
            "unit_price": ("京东价",),
            "order_discount": ("优惠金额",),
            "shipping": ("运费金额",),
            # 订单金额 (the goods) - 优惠金额 + 运费金额 = 应付金额, repeated on each item row.
            # (Its 服务费 column is not mapped: whether the buyer or the merchant pays it is
            # unconfirmed.)
            "paid_total": ("应付金额",),
            "status": ("订单状态",),
            "placed_at": ("下单时间",),
            "paid_at": ("付款确认时间",),
            "finished_at": ("订单完成时间",),
            "buyer_platform_id": ("下单帐号", "下单账号"),
            "receiver_name": ("客户姓名",),
            "receiver_phone": ("联系电话",),
            "address": ("客户地址",),
        },
        required=frozenset(
            {"external_id", "quantity", "unit_price", "status", "placed_at", "receiver_phone"}
        ),
        statuses=_statuses(
            {
                "等待付款": P.UNPAID,
                "等待出库": P.PAID,
                "等待发货": P.PAID,
                "等待确认收货": P.SHIPPED,
                "已出库": P.SHIPPED,
                "完成": P.DELIVERED,
                "已完成": P.DELIVERED,
                "(删除)锁定": P.CANCELLED,
                "锁定": P.CANCELLED,
                "取消": P.CANCELLED,
                "已取消": P.CANCELLED,
            }
        ),
    ),
    # 淘宝/天猫 (Taobao/Tmall) 千牛 已卖出的宝贝 → 批量导出: the order report (订单报表) and
    # the item report (宝贝报表) joined on 订单编号, one row per item.
    "taobao": Template(
        name="taobao",
        platform="taobao",
        label="淘宝/天猫订单导出 / Taobao & Tmall order export",
        columns={
            "external_id": ("订单编号",),
            "buyer_platform_id": ("买家会员名",),
            "title": ("标题", "宝贝标题"),
            "sku": ("商家编码",),
            "sku_fallback": ("外部系统编号",),
            "quantity": ("购买数量", "宝贝总数量"),
            "unit_price": ("价格",),
            "shipping": ("买家应付邮费",),
            "order_discount": ("店铺优惠",),
            # 订单报表: 买家应付货款 - 店铺优惠 + 买家应付邮费 = 买家实际支付金额.
            "paid_total": ("买家实际支付金额",),
            "status": ("订单状态",),
            "placed_at": ("订单创建时间", "买家下单时间"),
            "paid_at": ("订单付款时间", "买家付款时间"),
            "finished_at": ("确认收货时间",),
            "receiver_name": ("收货人姓名",),
            "receiver_phone": ("联系手机",),
            "address": ("收货地址",),
        },
        required=frozenset(
            {"external_id", "quantity", "unit_price", "status", "placed_at", "receiver_phone"}
        ),
        statuses=_statuses(
            {
                "等待买家付款": P.UNPAID,
                "买家已付款，等待卖家发货": P.PAID,
                "等待卖家发货": P.PAID,
                "买家已付款": P.PAID,
                "卖家已发货，等待买家确认": P.SHIPPED,
                "卖家已发货": P.SHIPPED,
                "等待买家确认收货": P.SHIPPED,
                "交易成功": P.DELIVERED,
                "交易关闭": P.CANCELLED,
                "付款以前，卖家或买家主动关闭交易": P.CANCELLED,
            }
        ),
    ),
    # 拼多多 (Pinduoduo) 商家后台 订单查询 → 导出: one row per order (one SKU each), the line's
    # amount as 商品总价(元), three discount columns, three service-fee columns.
    "pinduoduo": Template(
        name="pinduoduo",
        platform="pinduoduo",
        label="拼多多订单导出 / Pinduoduo order export",
        columns={
            "external_id": ("订单号",),
            "title": ("商品",),
            "sku": ("商家编码-SKU维度",),
            "sku_fallback": ("样式ID", "商品id"),
            "quantity": ("商品数量(件)",),
            "line_total": ("商品总价(元)",),
            "order_discount": ("店铺优惠折扣(元)", "平台优惠折扣(元)", "多多支付立减金额(元)"),
            "shipping": ("邮费(元)",),
            "fee": ("上门安装费(元)", "送货入户费(元)", "送货入户并安装费(元)"),
            "paid_total": ("用户实付金额(元)",),
            "status": ("订单状态",),
            "placed_at": ("订单成交时间", "拼单成功时间"),
            "paid_at": ("支付时间",),
            "finished_at": ("确认收货时间",),
            "receiver_name": ("收货人",),
            "receiver_phone": ("手机", "收货人手机号"),
            "province": ("省",),
            "city": ("市",),
            "district": ("区",),
            "street": ("街道",),
            "address": ("详细地址", "收货地址"),
        },
        required=frozenset(
            {"external_id", "quantity", "line_total", "status", "placed_at", "paid_total"}
        ),
        statuses=_statuses(
            {
                "待发货": P.PAID,
                "已发货，待签收": P.SHIPPED,
                "已发货，待收货": P.SHIPPED,
                "已签收": P.DELIVERED,
                "已收货": P.DELIVERED,
                "已取消": P.CANCELLED,
                "未发货，退款成功": P.REFUNDED,
                "已发货，退款成功": P.REFUNDED,
            }
        ),
        grouping=Grouping.ORDER_PER_ROW,
        summed=frozenset({"order_discount", "fee"}),
    ),
    # Our own layout for any other source: Chinese or English headers.
    "generic": Template(
        name="generic",
        platform="",
        label="通用模板 / Generic template",
        columns={
            "external_id": ("订单号", "order_id"),
            "line_id": ("行号", "line_id"),
            "sku": ("商品编码", "sku"),
            "title": ("商品名称", "title"),
            "quantity": ("数量", "quantity"),
            "unit_price": ("单价", "unit_price"),
            "line_discount": ("行优惠", "line_discount"),
            "category": ("类目", "category"),
            "order_discount": ("订单优惠", "order_discount"),
            "shipping": ("运费", "shipping"),
            "tax": ("税费", "tax"),
            "fee": ("服务费", "fee"),
            "paid_total": ("实付金额", "paid_total"),
            "currency": ("币种", "currency"),
            "status": ("状态", "status"),
            "placed_at": ("下单时间", "placed_at"),
            "paid_at": ("付款时间", "paid_at"),
            "finished_at": ("完成时间", "finished_at"),
            "buyer_name": ("买家姓名", "buyer_name"),
            "buyer_phone": ("买家手机", "buyer_phone"),
            "buyer_platform_id": ("买家ID", "buyer_id"),
            "buyer_email": ("买家邮箱", "buyer_email"),
            "receiver_name": ("收货人", "receiver_name"),
            "receiver_phone": ("收货电话", "receiver_phone"),
            "province": ("省", "province"),
            "city": ("市", "city"),
            "district": ("区", "district"),
            "address": ("详细地址", "address"),
            "postal_code": ("邮编", "postal_code"),
        },
        required=frozenset({"external_id", "sku", "quantity", "unit_price", "status"})
        | frozenset({"placed_at"}),
        statuses=_statuses({s.value: s for s in PlatformStatus}),
    ),
}


CUSTOM = "custom"
CUSTOM_REQUIRED = frozenset({"external_id", "sku", "quantity", "unit_price", "status"}) | {
    "placed_at"
}


def custom_template(columns: Mapping[str, str], platform: str = "") -> Template:
    """A merchant's own layout: canonical field -> the header text of its column (saved on the
    channel account as `config.file_columns`); refuses unknown fields and missing essentials."""
    unknown = sorted(set(columns) - FIELDS)
    if unknown:
        raise FileError(f"未知字段 / unknown fields in the column mapping: {', '.join(unknown)}")
    missing = sorted(CUSTOM_REQUIRED - columns.keys())
    if missing:
        raise FileError(f"列映射缺少 / the column mapping lacks: {', '.join(missing)}")
    return Template(
        name=CUSTOM,
        platform=platform,
        label="自定义列映射 / the account's own column mapping",
        columns={field: (header.strip(),) for field, header in columns.items()},
        required=CUSTOM_REQUIRED,
        statuses=TEMPLATES["generic"].statuses,
    )


def template_for(name: str, columns: Mapping[str, str] | None = None) -> Template:
    """A template by name (`custom`: the given column mapping), or FileError."""
    if name == CUSTOM:
        if not columns:
            raise FileError("此账户没有保存列映射 / the account has no saved column mapping")
        return custom_template(columns)
    try:
        return TEMPLATES[name]
    except KeyError:
        raise FileError(
            f"未知模板 / unknown template {name!r}; choose one of {', '.join(TEMPLATES)}"
        ) from None
