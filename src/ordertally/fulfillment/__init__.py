"""Fulfillment: shipments, carriers, waybills, tracking and the customer tracking page."""
