"""Group commit: requests that arrive while a transaction is being written wait for the next one and share
it, so that under load a commit (and its round trips) serves many requests instead of one.

One writer runs at a time: while it commits, the next batch gathers. Alone, a request is written at once, as
it would be without this. If a batch fails, each of its requests is written alone, so that one bad request
fails only itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

from prometheus_client import Histogram

from oms.kernel.unit_of_work import UnitOfWork, UnitOfWorkFactory

T = TypeVar("T")
R = TypeVar("R")
Repo = TypeVar("Repo")

GROUP_SIZE: Final = Histogram(
    "oms_group_commit_requests",
    "Requests written in one transaction",
    ["writer"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


class GroupCommit(Generic[Repo, T, R]):
    """Runs `write(tx, items)` in one unit of work for the items submitted meanwhile; `write` answers one
    result per item, in order."""

    def __init__(
        self,
        name: str,
        unit_of_work: UnitOfWorkFactory[Repo],
        write: Callable[[UnitOfWork[Repo], Sequence[T]], Awaitable[Sequence[R]]],
        max_batch: int = 256,
    ) -> None:
        self.name = name
        self._unit_of_work = unit_of_work
        self._write = write
        self._max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Write `item` with whatever else is waiting; returns its result once committed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_waiting(), name=f"group-commit-{self.name}")
        return await future

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._write_batch(batch)
        except BaseException as exc:  # cancelled at shutdown: nobody may wait for ever
            for _, future in self._waiting:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("stopped"))
            self._waiting.clear()
            raise
        finally:
            self._writer = None

    async def _write_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        GROUP_SIZE.labels(self.name).observe(len(batch))
        try:
            async with self._unit_of_work() as tx:
                results = await self._write(tx, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} requests")
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for one in batch:
                await self._write_batch([one])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[R], outcome: R | Exception) -> None:
    if future.done():  # its request was cancelled (the client went away); the write stands
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
