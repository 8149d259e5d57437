"""Errors of the fulfillment domain, each with its HTTP status and stable code."""

from ordertally.core.errors import OrdertallyError


class FulfillmentError(OrdertallyError):
    status = 409
    code = "fulfillment.error"
    title = "Fulfillment error"


class ShipmentNotFound(FulfillmentError):
    status = 404
    code = "fulfillment.shipment_not_found"
    title = "Shipment not found"


class WaybillMissing(FulfillmentError):
    code = "fulfillment.waybill_missing"
    title = "The shipment has no waybill number yet; give one or wait for the carrier's"


class AlreadyShipped(FulfillmentError):
    code = "fulfillment.already_shipped"
    title = "The shipment already left with another waybill number"


class WaybillInUse(FulfillmentError):
    code = "fulfillment.waybill_in_use"
    title = "This waybill number already belongs to another shipment"


class ShipmentNotReady(FulfillmentError):
    code = "fulfillment.not_ready"
    title = "The order of this shipment cannot be fulfilled now"


class TrackingLinkInvalid(FulfillmentError):
    status = 404
    code = "fulfillment.tracking_link_invalid"
    title = "This tracking link is not valid"


class ShipListInvalid(FulfillmentError):
    status = 422
    code = "fulfillment.ship_list_invalid"
    title = "The shipped list cannot be read"
