"""Cursor pages that iterate themselves.

A list call answers one page (``page.items``, ``page.next_cursor``); iterating the page walks every
item of every following page, fetching each page when it is reached:

>>> page = SyncCursorPage([1, 2], "c1", lambda cursor: SyncCursorPage([3], None, None))
>>> list(page)
[1, 2, 3]
>>> page.items
[1, 2]
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gni_client.types import Run, require_pandas

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped]

__all__ = ["AsyncCursorPage", "AsyncPaginator", "SyncCursorPage"]

T = TypeVar("T")


def _frame(items: list[Any]) -> pandas.DataFrame:
    pd = require_pandas()
    if items and all(isinstance(item, Run) for item in items):
        return pd.DataFrame([item.row() for item in items])
    rows = [{k: v for k, v in vars(item).items() if k != "raw"} for item in items]
    return pd.DataFrame(rows)


class SyncCursorPage(Generic[T]):
    """One page of a list; iterate it for every item of this and the following pages."""

    def __init__(
        self, items: list[T], next_cursor: str | None, fetch: Callable[[str], SyncCursorPage[T]] | None
    ):
        self.items = items
        self.next_cursor = next_cursor
        self._fetch = fetch

    def has_next_page(self) -> bool:
        return self.next_cursor is not None and self._fetch is not None

    def get_next_page(self) -> SyncCursorPage[T]:
        if self.next_cursor is None or self._fetch is None:
            raise StopIteration("this is the last page")
        return self._fetch(self.next_cursor)

    def iter_pages(self) -> Iterator[SyncCursorPage[T]]:
        page: SyncCursorPage[T] = self
        yield page
        while page.has_next_page():
            page = page.get_next_page()
            yield page

    def __iter__(self) -> Iterator[T]:
        for page in self.iter_pages():
            yield from page.items

    def to_list(self) -> list[T]:
        """Every item of every page."""
        return list(self)

    def to_pandas(self) -> pandas.DataFrame:
        """Every item of every page as a table (runs: one flat row each, see :meth:`Run.row`)."""
        return _frame(self.to_list())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(items={len(self.items)}, next_cursor={self.next_cursor!r})"


class AsyncCursorPage(Generic[T]):
    """One page of an async list; ``async for`` it for every item of this and the following pages."""

    def __init__(
        self,
        items: list[T],
        next_cursor: str | None,
        fetch: Callable[[str], Awaitable[AsyncCursorPage[T]]] | None,
    ):
        self.items = items
        self.next_cursor = next_cursor
        self._fetch = fetch

    def has_next_page(self) -> bool:
        return self.next_cursor is not None and self._fetch is not None

    async def get_next_page(self) -> AsyncCursorPage[T]:
        if self.next_cursor is None or self._fetch is None:
            raise StopAsyncIteration("this is the last page")
        return await self._fetch(self.next_cursor)

    async def iter_pages(self) -> AsyncIterator[AsyncCursorPage[T]]:
        page: AsyncCursorPage[T] = self
        yield page
        while page.has_next_page():
            page = await page.get_next_page()
            yield page

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.iter_pages():
            for item in page.items:
                yield item

    async def to_list(self) -> list[T]:
        return [item async for item in self]

    async def to_pandas(self) -> pandas.DataFrame:
        return _frame(await self.to_list())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(items={len(self.items)}, next_cursor={self.next_cursor!r})"


class AsyncPaginator(Generic[T]):
    """What an async list call returns: ``await`` it for the first page, or ``async for`` every item."""

    def __init__(self, first: Callable[[], Awaitable[AsyncCursorPage[T]]]) -> None:
        self._first = first

    def __await__(self) -> Generator[Any, None, AsyncCursorPage[T]]:
        return self._first().__await__()

    async def __aiter__(self) -> AsyncIterator[T]:
        page = await self._first()
        async for item in page:
            yield item
