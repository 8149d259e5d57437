"""Run the carrier simulator on 127.0.0.1 in a background thread, and drive it from tests.

The engine lives on the server thread's event loop; `CarrierSimServer`'s coroutines hand each
call to that loop and await the result, so a test on its own loop can play scripts step by step
while ordertally talks to the simulator over real HTTP:

    with CarrierSimServer() as sim:                       # http://127.0.0.1:<port>
        adapter = Kuaidi100Adapter(api_base=sim.url, customer=sim.engine.customer,
                                   key=sim.engine.key, secret=sim.engine.secret, salt="s")
        await sim.advance()                               # one step for every subscription
        await sim.set_mode(duplicate_rate=0.1, out_of_order_rate=0.1)
        sim.refuse_connections(); ...; sim.accept_connections()
"""

from __future__ import annotations

from typing import Any

from ordertally.fulfillment.simulator.app import create_carrier_sim_app
from ordertally.fulfillment.simulator.engine import (
    CarrierSimulator,
    Delivery,
    Final,
    ModePatch,
    SimWaybill,
)
from ordertally.simkit.misbehaviour import Misbehaviour
from ordertally.simkit.server import BackgroundServer


class CarrierSimServer(BackgroundServer):
    """The simulator served by uvicorn on its own thread and loop; start() / stop() or `with`."""

    def __init__(
        self,
        engine: CarrierSimulator | None = None,
        *,
        port: int = 0,
        push_every: float | None = None,
    ) -> None:
        self.engine = engine or CarrierSimulator(seed=0)
        self.push_every = push_every
        super().__init__(
            lambda: create_carrier_sim_app(self.engine, push_every=self.push_every),
            port=port,
            name="carriersim",
            on_close=self.engine.aclose,
        )

    # --- in-process API (await from any loop) -------------------------------------------------

    async def advance(self, number: str | None = None, steps: int = 1) -> list[Delivery]:
        """Play the next step(s) of one or every subscribed waybill; returns the push attempts
        once every receiver has answered."""
        return await self.call(lambda: self.engine.advance(number, steps))

    async def run_to_end(self, number: str | None = None) -> list[Delivery]:
        """Play every remaining step (and flush held pushes)."""
        return await self.call(lambda: self.engine.run_to_end(number))

    async def flush(self, number: str | None = None) -> list[Delivery]:
        """Send the pushes out-of-order mode still holds back."""
        return await self.call(lambda: self.engine.flush(number))

    async def retry(self) -> list[Delivery]:
        """Resend pushes that were not answered result:true."""
        return await self.call(self.engine.retry)

    async def set_mode(self, number: str | None = None, **fields: Any) -> Misbehaviour:
        """Misbehave: duplicate_rate, out_of_order_rate, forge_rate, silent (all or one)."""
        patch = ModePatch(**fields)
        return await self.call_sync(lambda: self.engine.set_mode(patch, number))

    async def set_down(self, seconds: float | None = None, requests: int | None = None) -> None:
        """Answer 503 to the carrier APIs for `seconds` and/or the next `requests` calls."""
        await self.call_sync(lambda: self.engine.set_down(seconds, requests))

    async def set_defaults(
        self, *, final: Final | None = None, transit_steps: int | None = None
    ) -> None:
        """The script of waybills created from now on."""

        def apply() -> None:
            if final is not None:
                self.engine.default_final = final
            if transit_steps is not None:
                self.engine.default_transit_steps = transit_steps

        await self.call_sync(apply)

    async def set_script(
        self, number: str, *, final: Final | None = None, transit_steps: int | None = None
    ) -> SimWaybill:
        """Rewrite one waybill's script before it plays."""
        return await self.call_sync(
            lambda: self.engine.set_script(number, final=final, transit_steps=transit_steps)
        )

    async def subscribe(
        self, company: str, number: str, callback_url: str, salt: str, *, resultv2: str = "1"
    ) -> bool:
        """Subscribe directly (as /poll would); False when already subscribed."""
        return await self.call_sync(
            lambda: self.engine.subscribe(company, number, callback_url, salt, resultv2=resultv2)
        )

    async def waybills(self) -> list[dict[str, Any]]:
        """Every waybill's summary (number, final, true_status, played, done, ...)."""
        return await self.call_sync(lambda: [w.as_json() for w in self.engine.waybills.values()])

    async def deliveries(self, number: str | None = None) -> list[Delivery]:
        """Every push attempt so far, oldest first."""
        return await self.call_sync(
            lambda: [d for d in self.engine.deliveries if number is None or d.number == number]
        )

    async def reset(self) -> None:
        """Forget everything; normal behaviour."""
        await self.call(self.engine.reset)
