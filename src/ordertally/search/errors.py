"""Errors of the search domain, each with its HTTP status and stable code."""

from ordertally.core.errors import OrdertallyError


class SearchError(OrdertallyError):
    status = 400
    code = "search.error"
    title = "Search failed"


class InvalidCursor(SearchError):
    status = 400
    code = "search.invalid_cursor"
    title = "Invalid cursor"


class InvalidFilter(SearchError):
    status = 400
    code = "search.invalid_filter"
    title = "Invalid filter"


class SynonymRefused(SearchError):
    status = 400
    code = "search.synonym_refused"
    title = "Synonym refused"


class SynonymNotFound(SearchError):
    status = 404
    code = "search.synonym_not_found"
    title = "Synonym not found"
