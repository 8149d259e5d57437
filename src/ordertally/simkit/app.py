"""The ASGI app every simulator is: its state on `app.state.sim`, its routers, and a refused
action (SimError) answered as {"code", "message"} with its status wherever a route does not
translate it into its platform's own error format."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from ordertally.simkit.errors import SimError, problem_response


async def _refused(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SimError)
    return problem_response(exc)


def simulator_app(sim: Any, routers: Sequence[APIRouter], *, title: str, **fastapi: Any) -> FastAPI:
    """A FastAPI app serving `sim` through `routers` (other FastAPI options pass through)."""
    app = FastAPI(title=title, **fastapi)
    app.state.sim = sim
    for router in routers:
        app.include_router(router)
    app.add_exception_handler(SimError, _refused)
    return app
