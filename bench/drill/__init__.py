"""The full-chain drill (`make drill`, `python -m bench.drill`): the seed's New Year promotion
replayed through the whole chain on PostgreSQL, with the end state checked.

`scenario` drives the load (orders over HTTP, payments through the payment simulator, the
warehouse shipping), `sampler` watches the queues and the CPU every second, `checks` decides
whether the run ended clean, `report` writes the JSON and the HTML with its charts.
"""
