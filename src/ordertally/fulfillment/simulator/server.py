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

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

from ordertally.fulfillment.simulator.app import create_carrier_sim_app
from ordertally.fulfillment.simulator.engine import (
    CarrierSimulator,
    Delivery,
    Final,
    Mode,
    ModePatch,
    SimWaybill,
)

T = TypeVar("T")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CarrierSimServer:
    """The simulator served by uvicorn on its own thread and loop; start() / stop() or `with`."""

    def __init__(
        self,
        engine: CarrierSimulator | None = None,
        *,
        port: int = 0,
        push_every: float | None = None,
    ) -> None:
        self.engine = engine or CarrierSimulator(seed=0)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.push_every = push_every
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._serving: Future[None] | None = None

    # --- lifecycle (blocking; call from fixtures) ---------------------------------------------

    def start(self) -> CarrierSimServer:
        """Start the loop thread and the HTTP server; returns when it accepts connections."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, daemon=True, name="carriersim")
        self._thread.start()
        self.accept_connections()
        return self

    def accept_connections(self) -> None:
        """(Re)start the HTTP server on the same port (after `refuse_connections`)."""
        if self._server is not None:
            return
        app = create_carrier_sim_app(self.engine, push_every=self.push_every)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        self._server = server
        self._serving = asyncio.run_coroutine_threadsafe(server.serve(), self._running_loop())
        deadline = time.monotonic() + 10
        while not server.started:
            if self._serving.done() or time.monotonic() > deadline:
                self._server = None
                raise RuntimeError("carrier simulator did not start")
            time.sleep(0.005)

    def refuse_connections(self) -> None:
        """Stop listening: connections are refused until `accept_connections` (state is kept)."""
        server, serving = self._server, self._serving
        if server is None or serving is None:
            return
        server.should_exit = True
        serving.result(timeout=15)
        self._server = self._serving = None

    def stop(self) -> None:
        """Stop the server, close the push client and end the loop thread."""
        if self._loop is None:
            return
        self.refuse_connections()
        asyncio.run_coroutine_threadsafe(self.engine.aclose(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> CarrierSimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("carrier simulator is not started")
        return self._loop

    # --- in-process API (await from any loop) -------------------------------------------------

    async def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `fn()` on the simulator's loop and await its result."""
        future = asyncio.run_coroutine_threadsafe(fn(), self._running_loop())
        return await asyncio.wrap_future(future)

    async def _sync(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return await self.call(run)

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

    async def set_mode(self, number: str | None = None, **fields: Any) -> Mode:
        """Misbehave: duplicate_rate, out_of_order_rate, forge_rate, silent (all or one)."""
        patch = ModePatch(**fields)
        return await self._sync(lambda: self.engine.set_mode(patch, number))

    async def set_down(self, seconds: float | None = None, requests: int | None = None) -> None:
        """Answer 503 to the carrier APIs for `seconds` and/or the next `requests` calls."""
        await self._sync(lambda: self.engine.set_down(seconds, requests))

    async def set_defaults(
        self, *, final: Final | None = None, transit_steps: int | None = None
    ) -> None:
        """The script of waybills created from now on."""

        def apply() -> None:
            if final is not None:
                self.engine.default_final = final
            if transit_steps is not None:
                self.engine.default_transit_steps = transit_steps

        await self._sync(apply)

    async def set_script(
        self, number: str, *, final: Final | None = None, transit_steps: int | None = None
    ) -> SimWaybill:
        """Rewrite one waybill's script before it plays."""
        return await self._sync(
            lambda: self.engine.set_script(number, final=final, transit_steps=transit_steps)
        )

    async def subscribe(
        self, company: str, number: str, callback_url: str, salt: str, *, resultv2: str = "1"
    ) -> bool:
        """Subscribe directly (as /poll would); False when already subscribed."""
        return await self._sync(
            lambda: self.engine.subscribe(company, number, callback_url, salt, resultv2=resultv2)
        )

    async def waybills(self) -> list[dict[str, Any]]:
        """Every waybill's summary (number, final, true_status, played, done, ...)."""
        return await self._sync(lambda: [w.as_json() for w in self.engine.waybills.values()])

    async def deliveries(self, number: str | None = None) -> list[Delivery]:
        """Every push attempt so far, oldest first."""
        return await self._sync(
            lambda: [d for d in self.engine.deliveries if number is None or d.number == number]
        )

    async def reset(self) -> None:
        """Forget everything; normal behaviour."""
        await self.call(self.engine.reset)
