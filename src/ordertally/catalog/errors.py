"""Errors of the catalog domain."""

from ordertally.core.errors import OrdertallyError


class CatalogError(OrdertallyError):
    status = 409
    code = "catalog.error"
    title = "Catalogue error"


class UnknownSku(CatalogError):
    status = 422
    code = "catalog.unknown_sku"
    title = "Unknown SKU code"


class InactiveSku(CatalogError):
    status = 422
    code = "catalog.inactive_sku"
    title = "SKU no longer sold"


class SkuNotFound(CatalogError):
    status = 404
    code = "catalog.sku_not_found"
    title = "SKU not found"


class SkuExists(CatalogError):
    code = "catalog.sku_exists"
    title = "A SKU with this code exists"


class BarcodeTaken(CatalogError):
    code = "catalog.barcode_taken"
    title = "Another SKU has this barcode"


class InvalidBarcode(CatalogError):
    status = 422
    code = "catalog.invalid_barcode"
    title = "Invalid barcode"


class InvalidBundle(CatalogError):
    status = 422
    code = "catalog.invalid_bundle"
    title = "Invalid bundle"


class CategoryNotFound(CatalogError):
    status = 404
    code = "catalog.category_not_found"
    title = "Category not found"


class CategoryExists(CatalogError):
    code = "catalog.category_exists"
    title = "A category with this code exists"


class InvalidCategory(CatalogError):
    status = 422
    code = "catalog.invalid_category"
    title = "Invalid category"
