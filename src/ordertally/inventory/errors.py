"""Errors of the inventory domain."""

from ordertally.core.errors import OrdertallyError


class InventoryError(OrdertallyError):
    status = 409
    code = "inventory.error"
    title = "Inventory error"


class InsufficientStock(InventoryError):
    code = "inventory.insufficient"
    title = "Not enough stock"


class BelowReserved(InventoryError):
    code = "inventory.below_reserved"
    title = "On hand cannot drop below what is reserved"


class WarehouseNotFound(InventoryError):
    status = 404
    code = "inventory.warehouse_not_found"
    title = "Warehouse not found"


class WarehouseExists(InventoryError):
    code = "inventory.warehouse_exists"
    title = "A warehouse with this code exists"


class InvalidMovement(InventoryError):
    status = 422
    code = "inventory.invalid_movement"
    title = "Invalid stock movement"


class InvalidStrategy(InventoryError):
    status = 422
    code = "inventory.invalid_strategy"
    title = "Unknown allocation criterion"
