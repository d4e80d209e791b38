"""`ingest.cratedb_runner.CrateRunner` called from plain test code: each coroutine runs in an event
loop of its own, and the runner's connections are closed after it (they belong to that loop)."""

from __future__ import annotations

import asyncio

from ingest.cratedb_runner import CrateRunner


class BlockingRunner:
    def __init__(self, *args, **kwargs) -> None:
        self.runner = CrateRunner(*args, **kwargs)

    def __getattr__(self, name: str):
        method = getattr(self.runner, name)
        if not asyncio.iscoroutinefunction(method):
            return method

        def call(*args, **kwargs):
            async def once():
                try:
                    return await method(*args, **kwargs)
                finally:
                    await self.runner.close()
            return asyncio.run(once())
        return call
