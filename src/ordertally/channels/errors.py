"""Errors of the channels domain, each with its HTTP status and stable code."""

from ordertally.core.errors import OrdertallyError


class ChannelError(OrdertallyError):
    status = 409
    code = "channel.error"
    title = "Channel error"


class AccountNotFound(ChannelError):
    status = 404
    code = "channel.account_not_found"
    title = "No such channel account / 没有这个渠道账号"


class AccountExists(ChannelError):
    code = "channel.account_exists"
    title = "A channel account with this code exists / 渠道账号编码已存在"


class AccountInactive(ChannelError):
    code = "channel.account_inactive"
    title = "The channel account is not active / 渠道账号未启用"


class SyncNotSupported(ChannelError):
    status = 422
    code = "channel.sync_not_supported"
    title = "This platform has no pull sync / 该平台不支持拉取同步"


class MissingCredentials(ChannelError):
    status = 422
    code = "channel.missing_credentials"
    title = "The account lacks credentials / 渠道账号缺少凭据"


class SyncInProgress(ChannelError):
    code = "channel.sync_in_progress"
    title = "A sync of this account is running / 该账号正在同步"


class PlatformUnavailable(ChannelError):
    status = 502
    code = "channel.platform_unavailable"
    title = "The platform did not answer as expected / 平台接口异常"


class RateLimited(PlatformUnavailable):
    status = 429
    code = "channel.rate_limited"
    title = "The platform asked us to slow down / 平台限流"


class WebhookUnauthenticated(ChannelError):
    status = 401
    code = "channel.webhook_signature_invalid"
    title = "The webhook signature does not match / 回调签名无效"


class WebhookInvalid(ChannelError):
    status = 400
    code = "channel.webhook_invalid"
    title = "The webhook is not a valid order notification / 回调内容无效"


class MappingNotFound(ChannelError):
    status = 404
    code = "channel.sku_mapping_not_found"
    title = "No such SKU mapping / 没有这个 SKU 映射"


class MappingExists(ChannelError):
    code = "channel.sku_mapping_exists"
    title = "This platform SKU is already mapped / 该平台 SKU 已有映射"


class InvalidAccount(ChannelError):
    status = 422
    code = "channel.invalid_account"
    title = "The channel account settings are not valid / 渠道账号设置无效"


class FileImportRefused(ChannelError):
    status = 422
    code = "channel.file_import_refused"
    title = "This file cannot be imported / 该文件无法导入"


class FileImportNotFound(ChannelError):
    status = 404
    code = "channel.file_import_not_found"
    title = "No such file import / 没有这个文件导入"


class NoRejectedRows(ChannelError):
    status = 404
    code = "channel.file_import_no_rejected_rows"
    title = "This file import has no rejected rows / 该文件导入没有被拒的行"


class PersonalDataNotAllowed(ChannelError):
    status = 403
    code = "channel.personal_data_not_allowed"
    title = "This key may not see buyers' personal data in clear / 无权查看买家个人信息明文"
