"""`ordertally carriersim`: serve the carrier simulator (Kuaidi100 formats) for the demo and
manual tests."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the `carriersim` command to the main command line."""

    @app.command("carriersim")
    def carriersim(
        port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 8765,
        host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
        push_every: Annotated[
            float,
            typer.Option(
                min=0, help="Seconds between tracking steps pushed (0 = only via /_sim/advance)"
            ),
        ] = 0.0,
        key: Annotated[str, typer.Option(help="Authorization key it accepts")] = "sim-key",
        customer: Annotated[str, typer.Option(help="Customer id it accepts")] = "SIMCUSTOMER",
        secret: Annotated[str, typer.Option(help="Label API secret it accepts")] = "sim-secret",
        seed: Annotated[
            int | None, typer.Option(help="Random seed (numbers, misbehaviour)")
        ] = None,
    ) -> None:
        """Serve Kuaidi100's waybill, subscription and query APIs and push tracking (carrier
        simulator); control API under /_sim."""
        from ordertally.fulfillment.simulator.app import create_carrier_sim_app
        from ordertally.fulfillment.simulator.engine import CarrierSimulator
        from ordertally.simkit import server

        engine = CarrierSimulator(key=key, customer=customer, secret=secret, seed=seed)
        app_ = create_carrier_sim_app(engine, push_every=push_every or None)
        typer.echo(f"carrier simulator on http://{host}:{port}  ·  control API under /_sim")
        typer.echo(
            f"settings: ORDERTALLY_KUAIDI100_API_BASE=http://{host}:{port} "
            f"ORDERTALLY_KUAIDI100_KEY={key} ORDERTALLY_KUAIDI100_CUSTOMER={customer} "
            f"ORDERTALLY_KUAIDI100_SECRET={secret} ORDERTALLY_KUAIDI100_SALT=<any>"
        )
        server.run(app_, host, port)
