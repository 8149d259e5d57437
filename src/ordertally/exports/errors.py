"""Errors of the exports domain."""

from ordertally.core.errors import OrdertallyError


class ExportError(OrdertallyError):
    status = 409
    code = "exports.error"
    title = "Export error"


class UnknownTemplate(ExportError):
    status = 422
    code = "exports.unknown_template"
    title = "Unknown export template"


class InvalidExport(ExportError):
    status = 422
    code = "exports.invalid"
    title = "Invalid export request"


class PiiNotAllowed(ExportError):
    status = 403
    code = "exports.pii_not_allowed"
    title = "This role may not export personal data in clear"


class ExportOutOfScope(ExportError):
    status = 403
    code = "exports.out_of_scope"
    title = "This export is outside the caller's channel accounts"


class ExportNotFound(ExportError):
    status = 404
    code = "exports.not_found"
    title = "Export not found"


class ExportNotReady(ExportError):
    code = "exports.not_ready"
    title = "Export file not available"


class TemplateExists(ExportError):
    code = "exports.template_exists"
    title = "A template with this name exists"


class ExportInconsistent(ExportError):
    status = 500
    code = "exports.inconsistent"
    title = "Export rows differ from the snapshot's count"


class ExportTooLarge(ExportError):
    status = 422
    code = "exports.too_large"
    title = "More rows than one XLSX sheet holds"
