"""A carrier simulator that speaks Kuaidi100's wire formats over real HTTP.

`engine` holds the waybills, their tracking scripts and the push deliveries (misbehaving on
command), `app` is the HTTP server (Kuaidi100's APIs plus the /_sim control API), `server` runs
it on 127.0.0.1 in a background thread for tests, and `cli` adds `ordertally carriersim`.
"""
