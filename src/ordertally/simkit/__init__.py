"""The kit the local platform simulators share (payments, carrier, channels, SMS): the refused
control action (`errors`), the misbehaviour model with its seeded dice and scripted outages
(`misbehaviour`), and serving an app on 127.0.0.1 from a background thread (`server`).

The simulators keep their platforms' wire formats; only what they have in common lives here.
"""
