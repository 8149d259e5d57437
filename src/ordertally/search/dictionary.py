"""The segmenter's user dictionary fed from the catalogue, the same in every process.

The catalogue appends each word it uses to `catalog_word` at a revision (catalog.service), and
moves its one revision row under a row lock, so revisions commit in order. Every process that
segments (the API tokenising a query, the worker indexing orders) reads (epoch, revision) of
that row before it segments, one primary-key read per query or per batch, and adds the words of
the revisions it has not seen yet to its segmenter. Words are only ever added, each with one
fixed frequency, so two processes at the same revision cut every text the same way. A new epoch
(the row created again: a restored or emptied database) starts over from the shipped
dictionary.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.catalog import service as catalog_service
from ordertally.core.db import Database, SharedRead
from ordertally.search import tokens as tk


@dataclass(slots=True)
class _Seen:
    epoch: str | None = None
    revision: int = 0


_SEEN = _Seen()


def seen() -> tuple[str | None, int]:
    """(epoch, revision) of the catalogue words this process's segmenter holds."""
    return _SEEN.epoch, _SEEN.revision


async def ensure_current(session: AsyncSession) -> int:
    """Bring this process's segmenter up to the catalogue's word revision; returns the words
    added (0 when it was current: the cost is then one read of one row)."""
    epoch, revision = await catalog_service.word_revision(session)
    return await ensure_at(session, epoch, revision)


async def ensure_at(session: AsyncSession, epoch: str | None, revision: int) -> int:
    """Bring this process's segmenter up to a word revision read before (by `current`);
    returns the words added (0, and no read, when it is there already)."""
    if epoch == _SEEN.epoch and revision == _SEEN.revision:
        return 0
    after = _SEEN.revision
    if epoch != _SEEN.epoch or revision < _SEEN.revision:
        tk.reset_segmenter()
        after = 0
    added = tk.add_catalog_words(await catalog_service.words_between(session, after, revision))
    _SEEN.epoch, _SEEN.revision = epoch, revision
    return added


# Per database (one per process, or per test): the revision read the concurrent searches share.
_READS: weakref.WeakKeyDictionary[Database, SharedRead[tuple[str | None, int]]] = (
    weakref.WeakKeyDictionary()
)


async def current(db: Database) -> tuple[str | None, int]:
    """(epoch, revision) of the catalogue's words, from a read that started after the call
    and that the searches arriving meanwhile share (the search path: one round trip per burst
    instead of one per query, and still every word committed before the query)."""
    shared = _READS.get(db)
    if shared is None:
        shared = _READS[db] = SharedRead(lambda: catalog_service.word_revision_now(db))
    return await shared.get()


def forget() -> None:
    """Back to the shipped dictionary; the next ensure_current loads every word (tests)."""
    tk.reset_segmenter()
    _SEEN.epoch, _SEEN.revision = None, 0
