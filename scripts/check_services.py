"""Exit non-zero unless the services named by MERCATO_TEST_POSTGRES_URL and MERCATO_TEST_REDIS_URL answer.

CI sets both; a missing or unreachable service is a failure there, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import sys

import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


async def main() -> int:
    failures = []
    pg = os.environ.get("MERCATO_TEST_POSTGRES_URL")
    rd = os.environ.get("MERCATO_TEST_REDIS_URL")
    if not pg:
        failures.append("MERCATO_TEST_POSTGRES_URL is not set")
    else:
        engine = create_async_engine(pg)
        try:
            async with engine.connect() as conn:
                version = await conn.scalar(text("SHOW server_version"))
            print(f"postgresql {version} answers at {pg}")
        except Exception as exc:
            failures.append(f"PostgreSQL at {pg} does not answer: {exc}")
        finally:
            await engine.dispose()
    if not rd:
        failures.append("MERCATO_TEST_REDIS_URL is not set")
    else:
        client = aioredis.from_url(rd)
        try:
            await client.ping()
            print(f"redis answers at {rd}")
        except Exception as exc:
            failures.append(f"Redis at {rd} does not answer: {exc}")
        finally:
            await client.aclose()
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
