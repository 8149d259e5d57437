"""ordertally: an order management system that keeps every order accounted for."""

__version__ = "0.1.0"
