"""Request and response shapes of the channels API; unknown fields are refused."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ordertally.channels.models import FILE_IMPORT_STATES, PLATFORMS
from ordertally.core.inputs import Line

Code = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$")]
Platform = Literal["shopify", "amazon", "pinduoduo", "douyin", "jd", "taobao", "file"]
assert set(Platform.__args__) == set(PLATFORMS)  # type: ignore[attr-defined]
FileImportState = Literal["queued", "running", "done", "failed"]
assert set(FileImportState.__args__) == set(FILE_IMPORT_STATES)  # type: ignore[attr-defined]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=2000)


class Credentials(Strict):
    """Secrets: accepted, stored encrypted, never returned."""

    webhook_secret: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    refresh_token: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    client_secret: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    access_token: Annotated[str, Field(min_length=1, max_length=2000)] | None = None


class AccountConfig(Strict):
    """Non-secret platform settings."""

    base_url: Annotated[str, Field(max_length=500, pattern=r"^https?://")] | None = None
    marketplace_id: Annotated[str, Field(max_length=32)] | None = None
    client_id: Annotated[str, Field(max_length=200)] | None = None
    # Login with Amazon's token endpoint (the simulator's in tests); Amazon's own by default.
    lwa_url: Annotated[str, Field(max_length=500, pattern=r"^https?://")] | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None
    # The currency of the account's marketplace when the adapter's table lacks it (Amazon: a
    # Pending order of a marketplace not in `amazon.MARKETPLACES` has no amount to tell it).
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    # Pinduoduo's receiver decryption on pull: "none" (default), "pop" (pdd.open.decrypt.batch
    # at base_url, only answered inside Pinduoduo's cloud) or "hook" (the merchant's relay at
    # decrypt_url, same signed request and answer).
    decrypt: Literal["none", "pop", "hook"] | None = None
    decrypt_url: Annotated[str, Field(max_length=500, pattern=r"^https?://")] | None = None
    # The account's own file layout: canonical field -> header text (template "custom").
    file_columns: dict[str, Annotated[str, Field(min_length=1, max_length=100)]] | None = None

    @field_validator("file_columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            from ordertally.channels.files.templates import custom_template

            try:
                custom_template(value)
            except Exception as exc:
                raise ValueError(str(exc)) from exc
        return value


class SyncSettings(Strict):
    sync_interval_seconds: Annotated[int, Field(strict=True, ge=10, le=86_400)] | None = None
    overlap_seconds: Annotated[int, Field(strict=True, ge=0, le=86_400)] | None = None
    page_size: Annotated[int, Field(strict=True, ge=1, le=100)] | None = None
    rate_limit_per_second: Annotated[float, Field(gt=0, le=1000)] | None = None
    rate_limit_burst: Annotated[int, Field(strict=True, ge=1, le=1000)] | None = None
    empty_streak_threshold: Annotated[int, Field(strict=True, ge=1, le=10_000)] | None = None


class AccountCreate(SyncSettings):
    code: Code
    platform: Platform
    name: Annotated[Line, Field(min_length=1, max_length=100)]
    shop_id: Annotated[Line, Field(max_length=100)] = ""
    config: AccountConfig = AccountConfig()
    credentials: Credentials = Credentials()
    active: bool = True
    start_at: datetime | None = None  # where the first pull starts (default: now - overlap)


class AccountPatch(SyncSettings):
    name: Annotated[Line, Field(min_length=1, max_length=100)] | None = None
    shop_id: Annotated[Line, Field(max_length=100)] | None = None
    config: AccountConfig | None = None
    credentials: Credentials | None = None  # replaces the given secrets, keeps the others
    active: bool | None = None


class AccountOut(BaseModel):
    code: str
    platform: str
    name: str
    shop_id: str
    config: dict[str, Any]
    has_credentials: bool
    credential_names: list[str]
    sync_interval_seconds: int
    overlap_seconds: int
    page_size: int
    rate_limit_per_second: float
    rate_limit_burst: int
    empty_streak_threshold: int
    active: bool
    created_at: datetime
    updated_at: datetime


class AccountList(BaseModel):
    items: list[AccountOut]


class SyncStatusOut(BaseModel):
    account: str
    platform: str
    active: bool
    cursor_at: datetime | None
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    error_count: int
    empty_streak: int
    empty_streak_alert: bool
    lag_seconds: float | None
    orders_linked: int


class SyncResultOut(BaseModel):
    account: str
    pages: int
    orders_read: int
    created: int
    updated: int
    duplicates: int
    held: int
    errors: list[dict[str, str]]
    cursor_at: datetime | None
    complete: bool  # False: the run stopped (page limit, error) before reaching the end
    pii: str | None = None  # Amazon: "restricted" or "missing"
    unconverted: int = 0  # raw orders the adapter could not convert, held as order_not_created
    decrypted: int = 0  # Pinduoduo ciphertexts the decrypt service answered
    undecrypted: int = 0  # Pinduoduo orders created held as address_not_decrypted


class SkuMappingIn(Strict):
    platform: Platform
    account_code: Annotated[str, Field(pattern=r"^([a-z0-9_]{1,32})?$")] = ""
    platform_sku: Annotated[str, Field(min_length=1, max_length=128)]
    sku: Annotated[str, Field(pattern=r"^[A-Za-z0-9._/-]{1,64}$")]


class SkuMappingPatch(Strict):
    sku: Annotated[str, Field(pattern=r"^[A-Za-z0-9._/-]{1,64}$")]


class SkuMappingOut(BaseModel):
    id: int
    platform: str
    account_code: str
    platform_sku: str
    sku: str
    created_at: datetime
    updated_at: datetime


class SkuMappingList(BaseModel):
    items: list[SkuMappingOut]


class FileImportOut(BaseModel):
    """An uploaded order file: queued, running (progress in `rows` of `total_rows`), then
    done (its outcome counts) or failed (`error`); its file and rejected rows are not here."""

    id: int
    account: str
    filename: str
    template: str | None  # None: the columns tell
    state: FileImportState
    rows: int  # rows read so far
    total_rows: int | None  # None until the file's row count is known
    orders: int  # orders the rows made
    created: int
    updated: int
    duplicates: int
    held: int
    rejected_rows: int  # rows refused, with their reason: GET .../rejected
    error: str | None  # why a failed import failed (a file that cannot be read)
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
