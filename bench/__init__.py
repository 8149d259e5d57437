"""The benchmark harness for order creation: `make bench` or `python -m bench --help`."""
