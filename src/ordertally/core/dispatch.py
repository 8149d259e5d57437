"""Route dispatch through a table of static path prefixes, in FastAPI's own matching order.

FastAPI (0.16x) keeps each included router as a node of its own and, for every request, asks
each node in turn whether any of its routes match, then asks the chosen node again while
handling: a request to a route registered late paid a regular-expression match for nearly every
route of the app, twice for its own router. `RouteTable` flattens the routes once, in that same
depth-first order, and indexes each by the path segments its template fixes before its first
parameter. A request walks its own segments down the index and tries only the routes that could
match it, first in order wins, exactly as the ordered scan decides. Everything the scan would not
settle with a match (404, redirect of a trailing slash, low-priority routes) and every
non-HTTP scope is left to FastAPI's router, unchanged. ADR 0047 records the design.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from fastapi.routing import (
    _FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY,
    _FASTAPI_INCLUDED_ROUTER_KEY,
    _SCOPE_MISSING,
    APIRoute,
    APIRouter,
    _apply_router_form_limits,
    _EffectiveRouteContext,
    _get_fastapi_scope,
    _IncludedRouter,
    _restore_fastapi_scope_key,
    _route_selected,
    _update_scope,
    wrap_app_with_body_limit,
)
from starlette._utils import get_route_path
from starlette.routing import PARAM_REGEX, BaseRoute, Match, Mount, Route
from starlette.types import Receive, Scope, Send

_VERSION = attrgetter("_routes_version")

# The matchers whose regular expression is compiled from the route's path template by
# `compile_path`; a route with any other `matches` (a subclass, a Host) is tried on every path.
_TEMPLATE_MATCHERS = (Route.matches, APIRoute.matches, Mount.matches)


@dataclass(frozen=True, slots=True)
class Leaf:
    """One route as the ordered scan reaches it: the included routers it sits under, the
    route, and FastAPI's effective context for it when it sits under one."""

    order: int
    top: int  # the index of the route it is reached through in the router's own list
    chain: tuple[_IncludedRouter, ...]
    route: BaseRoute
    context: _EffectiveRouteContext | None
    prefix: tuple[str, ...] | None  # None: may match any path
    methods: frozenset[str] | None  # None: may match any method

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """The route's own answer, computed as `_IncludedRouter._match` computes it."""
        context = self.context
        if context is None:
            return self.route.matches(scope)
        if isinstance(context.original_route, APIRoute):
            fastapi_scope = _get_fastapi_scope(scope)
            previous = fastapi_scope.get(_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY, _SCOPE_MISSING)
            fastapi_scope[_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY] = context
            try:
                return context.original_route.matches(scope)
            finally:
                _restore_fastapi_scope_key(scope, _FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY, previous)
        return context.matches(scope)


@dataclass(slots=True)
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    own: list[Leaf] = field(default_factory=list)
    # this node's leaves and all its ancestors', in scan order: the candidates of a path
    # whose walk ends here; and those of them that take each method
    candidates: tuple[Leaf, ...] = ()
    by_method: dict[str, tuple[Leaf, ...]] = field(default_factory=dict)
    any_method: tuple[Leaf, ...] = ()


def static_prefix(template: str) -> tuple[str, ...]:
    """The path segments every path matching `template` starts with.

    Without a parameter the template matches only itself (its regex is `^template$`), so all its
    segments; otherwise the whole segments before the first parameter (the regex starts with
    them literally, each followed by a slash).
    """
    found = PARAM_REGEX.search(template)
    if found is None:
        return tuple(template.split("/")[1:])
    literal = template[: found.start()]
    return tuple(literal[: literal.rfind("/") + 1].split("/")[1:-1])


def _prefix_of(route: BaseRoute, context: _EffectiveRouteContext | None) -> tuple[str, ...] | None:
    if context is not None and context.starlette_route is not None:
        route = context.starlette_route
    matcher = getattr(type(route), "matches", None)
    if matcher not in _TEMPLATE_MATCHERS:
        return None
    if context is not None and isinstance(context.original_route, APIRoute):
        template = context.path  # the effective path: the inclusion's prefix + the route's
    elif isinstance(route, Mount):
        template = route.path + "/{path:path}"
    else:
        template = getattr(route, "path", "")
    if not template.startswith("/"):
        return None
    return static_prefix(template)


def _methods_of(route: BaseRoute, context: _EffectiveRouteContext | None) -> frozenset[str] | None:
    """The methods a route matches fully (`Route.matches`: any, if it has none)."""
    methods: Collection[str] | None
    if context is not None and isinstance(context.original_route, APIRoute):
        methods = context.methods
    elif isinstance(route, Route):
        methods = route.methods
    else:
        return None
    return frozenset(methods) if methods else None


def flatten(
    router: APIRouter,
) -> Iterator[tuple[int, tuple[_IncludedRouter, ...], BaseRoute, Any]]:
    """Every route of `router`, depth first through included routers, in scan order, with
    the index of the route of `router` it is reached through."""

    def walk(
        candidates: list[Any], chain: tuple[_IncludedRouter, ...]
    ) -> Iterator[tuple[tuple[_IncludedRouter, ...], BaseRoute, Any]]:
        for candidate in candidates:
            if isinstance(candidate, _IncludedRouter):
                yield from walk(candidate.effective_candidates(), (*chain, candidate))
            elif isinstance(candidate, _EffectiveRouteContext):
                route = candidate.starlette_route or candidate.original_route
                if isinstance(candidate.original_route, APIRoute):
                    route = candidate.original_route
                yield chain, route, candidate
            else:
                yield chain, candidate, None

    for top, route in enumerate(router.routes):
        for chain, leaf, context in walk([route], ()):
            yield top, chain, leaf, context


def routers_under(router: APIRouter) -> list[APIRouter]:
    """The router and every router included under it, once each."""
    found: dict[int, APIRouter] = {id(router): router}
    pending = [router]
    while pending:
        for route in pending.pop().routes:
            if isinstance(route, _IncludedRouter) and id(route.original_router) not in found:
                found[id(route.original_router)] = route.original_router
                pending.append(route.original_router)
    return list(found.values())


class RouteTable:
    """The router's entry point: HTTP requests that some route matches are dispatched from the
    table; anything else goes to the router's own `app` (FastAPI's ordered scan)."""

    def __init__(self, router: APIRouter) -> None:
        self.router = router
        self.fallback = router.app
        self.build()

    def build(self) -> None:
        """Index the router's routes as they stand (again, whenever they change)."""
        router = self.router
        self.leaves = []
        for n, (top, chain, route, context) in enumerate(flatten(router)):
            prefix = _prefix_of(route, context)
            # the methods are known only of the matchers that compare them as `Route` does
            methods = None if prefix is None else _methods_of(route, context)
            self.leaves.append(Leaf(n, top, chain, route, context, prefix, methods))
        positions = [n for n, r in enumerate(router.routes) if isinstance(r, _IncludedRouter)]
        self.first_included = positions[0] if positions else len(router.routes)
        self.root = _Node()
        for leaf in self.leaves:
            node = self.root
            for segment in leaf.prefix or ():
                node = node.children.setdefault(segment, _Node())
            node.own.append(leaf)
        self.methods = {m for leaf in self.leaves for m in leaf.methods or ()}
        self._settle(self.root, ())
        # What tells that routes changed: FastAPI bumps a router's `_routes_version` on each
        # route or router it adds, and a mount appends to the top router's list.
        self.routers = routers_under(router)
        self.versions = list(map(_VERSION, self.routers))
        self.top_count = len(router.routes)

    def current(self) -> bool:
        """Whether the table still describes the routes (FastAPI's own summed version walks
        every router recursively, many times what dispatch itself costs)."""
        return (
            len(self.router.routes) == self.top_count
            and list(map(_VERSION, self.routers)) == self.versions
        )

    def _settle(self, node: _Node, inherited: tuple[Leaf, ...]) -> None:
        node.candidates = tuple(sorted((*inherited, *node.own), key=lambda leaf: leaf.order))
        node.any_method = tuple(leaf for leaf in node.candidates if leaf.methods is None)
        node.by_method = {
            method: tuple(
                leaf for leaf in node.candidates if leaf.methods is None or method in leaf.methods
            )
            for method in self.methods
        }
        for child in node.children.values():
            self._settle(child, node.candidates)

    def node(self, scope: Scope) -> _Node:
        """The deepest node the request's path segments lead to."""
        path = get_route_path(scope)
        node = self.root
        if path.startswith("/"):
            # `$` in a route's regex also matches before one final newline
            for segment in path.removesuffix("\n").split("/")[1:]:
                child = node.children.get(segment)
                if child is None:
                    break
                node = child
        return node

    def candidates(self, scope: Scope) -> tuple[Leaf, ...]:
        """The routes that could match this request's path, in scan order."""
        return self.node(scope).candidates

    def select(self, scope: Scope) -> tuple[Leaf, Scope] | None:
        """The route the ordered scan picks (first full match, else first partial), if any.

        Only a route that takes the method can match fully, so those are tried first; the
        others only when none does (the path may still match one: a 405)."""
        node = self.node(scope)
        for leaf in node.by_method.get(scope["method"], node.any_method):
            match, child_scope = leaf.matches(scope)
            if match is Match.FULL:
                if leaf.top > self.first_included:
                    _get_fastapi_scope(scope)  # the scan asked an included router before
                return leaf, child_scope
        for leaf in node.candidates:
            match, child_scope = leaf.matches(scope)
            if match is Match.PARTIAL:
                if self.first_included < len(self.router.routes):
                    _get_fastapi_scope(scope)  # the scan asked every included router
                return leaf, child_scope
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self.router
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)
            return
        if not self.current():
            self.build()
        _apply_router_form_limits(scope, router.form_limits)
        if "router" not in scope:
            scope["router"] = router
        selected = self.select(scope)
        if selected is None:
            await self.fallback(scope, receive, send)
            return
        leaf, child_scope = selected
        await self.dispatch(leaf, child_scope, scope, receive, send)

    @staticmethod
    async def dispatch(
        leaf: Leaf, child_scope: Scope, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Hand the request to the leaf as the chain of included routers would."""
        route, context = leaf.route, leaf.context
        if not leaf.chain:
            _update_scope(scope, child_scope)
            _route_selected(
                scope=scope,
                path=getattr(route, "path_format", None),
                mount=isinstance(route, Mount),
            )
            await route.handle(scope, receive, send)
            return
        # Each included router applies its form limits and marks itself on its way in (the
        # telemetry hook it calls first is given no path, so it does nothing).
        fastapi_scope = _get_fastapi_scope(scope)
        for included in leaf.chain:
            _apply_router_form_limits(scope, included.include_context.form_limits)
            fastapi_scope[_FASTAPI_INCLUDED_ROUTER_KEY] = included
        assert context is not None
        _update_scope(scope, child_scope)
        _route_selected(
            scope=scope,
            path=getattr(context.starlette_route, "path_format", None) or context.path_format,
            mount=isinstance(route, Mount),
        )
        _get_fastapi_scope(scope)[_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY] = context
        if isinstance(context.original_route, APIRoute):
            scope["route"] = context.original_route
            await context.original_route.handle(scope, receive, send)
            return
        handle = wrap_app_with_body_limit(
            route.handle, leaf.chain[-1].include_context.max_body_size
        )
        await handle(scope, receive, send)


def install(router: APIRouter) -> RouteTable:
    """Put a table built from the router's current routes in front of its ordered scan."""
    table = RouteTable(router)
    router.middleware_stack = table
    return table
