"""``Idempotency-Key`` (API.md §1 "Idempotency"), through a test-only router added to the real app.

The router's endpoints insert a real ``jobs`` row (``enqueue``) through the request's session and return it, so
each test can count what was done. Runs on SQLite and on PostgreSQL + Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import APIRouter, FastAPI, Response
from pydantic import ConfigDict
from sqlalchemy import func, select, text, update

from mercato.app import create_app
from mercato.errors import Conflict
from mercato.orders.models import Order
from mercato.platform import clock
from mercato.platform.context import Services
from mercato.platform.idempotency import IdempotencyRecord
from mercato.platform.jobs import Job, enqueue
from mercato.schemas import RequestModel, ResponseModel
from mercato.web import idempotency
from mercato.web.deps import ServicesDep, SessionDep
from mercato.web.idempotency import IdempotencyDep
from mercato.web.problems import problems
from tests.conftest import _empty, bearer, make_admin, register

JOB = "test.idempotency"
URL = "/api/v1/test-idempotency/a/jobs"
EARLY = "/api/v1/test-idempotency/early"
STEPS = "/api/v1/test-idempotency/steps"
PROBLEMS = "https://mercato.dev/problems/"

#: labels whose next call is refused with a DomainError (removed to let a retry succeed)
REFUSE: set[str] = set()
#: label -> (entered, release): the next call with that label waits for ``release`` before writing anything
GATES: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}


class Thing(RequestModel):
    label: str
    model_config = ConfigDict(json_schema_extra={"examples": [{"label": "first"}]})


class Done(ResponseModel):
    id: uuid.UUID
    label: str
    bucket: str
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": "0190f0a2-0000-7000-8000-000000000000", "label": "x", "bucket": "a"}]}
    )


router = APIRouter(prefix="/test-idempotency", tags=["test"])


async def _do(session: SessionDep, bucket: str, body: Thing, response: Response) -> Done:
    gate = GATES.pop(body.label, None)
    if gate is not None:
        gate[0].set()
        await gate[1].wait()
    job_id = clock.new_id()
    enqueue(session, JOB, {"label": body.label, "bucket": bucket, "id": str(job_id)})
    await session.flush()
    if body.label in REFUSE:
        raise Conflict("Refused for the test.")
    response.headers["Location"] = f"/api/v1/test-idempotency/{bucket}/jobs/{job_id}"
    return Done(id=job_id, label=body.label, bucket=bucket)


@router.post(
    "/{bucket}/jobs",
    status_code=201,
    response_model=Done,
    summary="Enqueue a test job",
    description="Test-only.",
    responses=problems(Conflict) | idempotency.RESPONSES,
)
async def make_job(bucket: str, body: Thing, session: SessionDep, idem: IdempotencyDep, response: Response) -> Response:
    return await idem.run(session, lambda: _do(session, bucket, body, response), status_code=201, model=Done)


@router.post(
    "/early",
    status_code=201,
    response_model=Done,
    summary="Enqueue a test job after a first statement",
    description="Test-only: the request's session has started its transaction before the key is claimed.",
    responses=problems(Conflict) | idempotency.RESPONSES,
)
async def make_job_early(body: Thing, session: SessionDep, idem: IdempotencyDep, response: Response) -> Response:
    await session.execute(select(func.count()).select_from(Job))
    return await idem.run(session, lambda: _do(session, "early", body, response), status_code=201)


@router.post(
    "/steps",
    status_code=201,
    response_model=Done,
    summary="Enqueue a test job in its own committed step",
    description="Test-only: the money-POST shape (no request transaction; short committed steps).",
    responses=problems(Conflict) | idempotency.RESPONSES,
)
async def make_job_in_steps(body: Thing, services: ServicesDep, idem: IdempotencyDep) -> Response:
    async def steps() -> Done:
        job_id = clock.new_id()
        async with services.db.session(write=True) as session:  # e.g. "record the attempt"
            enqueue(session, JOB, {"label": body.label, "bucket": "steps", "id": str(job_id)})
        if body.label in REFUSE:  # e.g. "the gateway declined"
            raise Conflict("Refused for the test.")
        return Done(id=job_id, label=body.label, bucket="steps")

    return await idem.run_steps(steps, status_code=201, model=Done)


@pytest.fixture
async def app(services: Services) -> FastAPI:
    await _empty(services)
    REFUSE.clear()
    GATES.clear()
    application = create_app(services.settings, services=services)
    application.include_router(router, prefix="/api/v1")
    return application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def moved_clock() -> Any:
    """``move(seconds)`` shifts :func:`clock.now` forward from the real time; the real clock is restored after."""

    def move(seconds: float) -> None:
        clock.set_clock(lambda: datetime.now(UTC) + timedelta(seconds=seconds))

    yield move
    clock.set_clock(None)


async def jobs(services: Services, label: str | None = None) -> int:
    async with services.db.session(write=False) as session:
        query = select(Job.payload).where(Job.name == JOB)
        payloads = (await session.execute(query)).scalars().all()
    return sum(1 for p in payloads if label is None or p["label"] == label)


async def keys(services: Services) -> list[IdempotencyRecord]:
    async with services.db.session(write=False) as session:
        return list((await session.execute(select(IdempotencyRecord))).scalars().all())


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def raw_rows(services: Services) -> list[tuple[Any, ...]]:
    """Every column of every stored key, as the database returns it (what a reader of the database sees)."""
    async with services.db.session(write=False) as session:
        return [tuple(row) for row in (await session.execute(text("SELECT * FROM idempotency_keys"))).all()]


async def test_replays_the_first_response_and_does_the_work_once(client: httpx.AsyncClient, services: Services) -> None:
    headers = key()
    first = await client.post(URL, json={"label": "one"}, headers=headers)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert first.headers["Location"] == f"/api/v1/test-idempotency/a/jobs/{first.json()['id']}"
    assert first.json()["label"] == "one"

    again = await client.post(URL, json={"label": "one"}, headers=headers)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Content-Type"] == "application/json"
    assert "X-Request-ID" in again.headers
    # key order and whitespace do not matter (canonical JSON)
    raw = await client.post(
        URL, content=b'{ "label" :  "one" }', headers={**headers, "Content-Type": "application/json"}
    )
    assert raw.headers["Idempotent-Replayed"] == "true"
    assert raw.content == first.content
    assert await jobs(services) == 1
    [record] = await keys(services)
    assert record.response_status == 201
    assert record.locked_until is None
    assert record.key == headers["Idempotency-Key"]
    assert record.scope == "ip:127.0.0.1:POST /api/v1/test-idempotency/{bucket}/jobs"

    without = await client.post(URL, json={"label": "one"})
    assert without.status_code == 201
    assert "Idempotent-Replayed" not in without.headers
    assert await jobs(services) == 2


async def test_the_draft_quoted_key_is_the_same_key(client: httpx.AsyncClient, services: Services) -> None:
    first = await client.post(URL, json={"label": "q"}, headers={"Idempotency-Key": '"abc-123"'})
    assert first.status_code == 201
    again = await client.post(URL, json={"label": "q"}, headers={"Idempotency-Key": "abc-123"})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await jobs(services) == 1


async def test_same_key_other_request_is_a_mismatch(client: httpx.AsyncClient, services: Services) -> None:
    headers = key()
    assert (await client.post(URL, json={"label": "one"}, headers=headers)).status_code == 201
    for url, body in ((URL, {"label": "two"}), ("/api/v1/test-idempotency/b/jobs", {"label": "one"})):
        response = await client.post(url, json=body, headers=headers)
        assert response.status_code == 422, response.text
        assert response.headers["Content-Type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == PROBLEMS + "idempotency-mismatch"
        assert problem["status"] == 422
    assert await jobs(services) == 1
    assert len(await keys(services)) == 1


@pytest.mark.parametrize("bad", ["x" * 256, "", "  ", '""'])
async def test_bad_keys_are_refused_naming_the_header(client: httpx.AsyncClient, services: Services, bad: str) -> None:
    response = await client.post(URL, json={"label": "bad"}, headers={"Idempotency-Key": bad})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == PROBLEMS + "validation-error"
    assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert "Idempotency-Key" in problem["detail"]
    assert await jobs(services) == 0
    assert await keys(services) == []


async def test_a_255_character_key_is_fine(client: httpx.AsyncClient, services: Services) -> None:
    headers = {"Idempotency-Key": "k" * 255}
    assert (await client.post(URL, json={"label": "long"}, headers=headers)).status_code == 201
    again = await client.post(URL, json={"label": "long"}, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await jobs(services) == 1


async def test_concurrent_duplicates_run_once(client: httpx.AsyncClient, services: Services) -> None:
    headers = key()
    responses = await asyncio.gather(*(client.post(URL, json={"label": "race"}, headers=headers) for _ in range(10)))
    firsts = [r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers]
    replays = [r for r in responses if r.status_code == 201 and r.headers.get("Idempotent-Replayed") == "true"]
    conflicts = [r for r in responses if r.status_code == 409]
    assert len(firsts) == 1, [r.text for r in responses]
    assert len(firsts) + len(replays) + len(conflicts) == 10
    assert all(r.content == firsts[0].content for r in replays)
    for conflict in conflicts:
        assert conflict.json()["type"] == PROBLEMS + "idempotency-conflict"
        assert int(conflict.headers["Retry-After"]) >= 1
    assert await jobs(services, "race") == 1
    assert len(await keys(services)) == 1


async def test_a_refused_request_releases_its_key(client: httpx.AsyncClient, services: Services) -> None:
    headers = key()
    REFUSE.add("later")
    refused = await client.post(URL, json={"label": "later"}, headers=headers)
    assert refused.status_code == 409
    assert refused.json()["type"] == PROBLEMS + "conflict"
    assert await jobs(services) == 0
    assert await keys(services) == []

    REFUSE.discard("later")  # the client fixed the cause; the same key runs again
    retried = await client.post(URL, json={"label": "later"}, headers=headers)
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried.headers
    assert await jobs(services, "later") == 1


async def test_the_early_session_path_behaves_the_same(client: httpx.AsyncClient, services: Services) -> None:
    """The request's session ran a statement before the claim (on SQLite: the claim joins its transaction)."""
    headers = key()
    REFUSE.add("early")
    refused = await client.post(EARLY, json={"label": "early"}, headers=headers)
    assert refused.status_code == 409
    assert await jobs(services) == 0
    assert await keys(services) == []
    REFUSE.discard("early")

    first = await client.post(EARLY, json={"label": "early"}, headers=headers)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = await client.post(EARLY, json={"label": "early"}, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    mismatch = await client.post(EARLY, json={"label": "other"}, headers=headers)
    assert mismatch.status_code == 422
    assert mismatch.json()["type"] == PROBLEMS + "idempotency-mismatch"
    assert await jobs(services) == 1


async def test_committed_steps_run_once_and_a_refusal_frees_the_key(
    client: httpx.AsyncClient, services: Services
) -> None:
    headers = key()
    responses = await asyncio.gather(*(client.post(STEPS, json={"label": "pay"}, headers=headers) for _ in range(5)))
    firsts = [r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers]
    assert len(firsts) == 1, [r.text for r in responses]
    assert all(r.status_code == 409 or r.content == firsts[0].content for r in responses)
    assert await jobs(services, "pay") == 1
    replay = await client.post(STEPS, json={"label": "pay"}, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == firsts[0].content
    [record] = await keys(services)
    assert record.response_status == 201

    other = key()
    REFUSE.add("declined")
    refused = await client.post(STEPS, json={"label": "declined"}, headers=other)
    assert refused.status_code == 409
    assert refused.json()["type"] == PROBLEMS + "conflict"
    assert await jobs(services, "declined") == 1  # its committed step stays
    assert len(await keys(services)) == 1  # but the key is free again
    REFUSE.discard("declined")
    retried = await client.post(STEPS, json={"label": "declined"}, headers=other)
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried.headers
    assert await jobs(services, "declined") == 2


async def test_keys_are_scoped_per_caller(client: httpx.AsyncClient, services: Services) -> None:
    alice, bob = bearer(await register(client)), bearer(await register(client))
    client.cookies.clear()  # bearer only: the guests below must not be signed in by the login cookies
    headers = key()
    first = await client.post(URL, json={"label": "mine"}, headers={**alice, **headers})
    assert first.status_code == 201
    other = await client.post(URL, json={"label": "mine"}, headers={**bob, **headers})
    assert other.status_code == 201
    assert "Idempotent-Replayed" not in other.headers
    assert other.json()["id"] != first.json()["id"]
    replay = await client.post(URL, json={"label": "mine"}, headers={**alice, **headers})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    # guests are told apart by their cart cookie
    for cart in ("cart-one", "cart-two"):
        client.cookies.set("mercato_cart", cart)
        guest = await client.post(URL, json={"label": "mine"}, headers=headers)
        assert guest.status_code == 201
        assert "Idempotent-Replayed" not in guest.headers
    client.cookies.clear()
    assert await jobs(services, "mine") == 4
    scopes = sorted(r.scope.split(":")[0] for r in await keys(services))
    assert scopes == ["guest", "guest", "user", "user"]


async def test_expired_keys_run_again_and_are_purged(
    client: httpx.AsyncClient, services: Services, moved_clock: Callable[[float], None]
) -> None:
    headers, other = key(), key()
    first = await client.post(URL, json={"label": "old"}, headers=headers)
    assert first.status_code == 201
    assert (await client.post(URL, json={"label": "gone"}, headers=other)).status_code == 201

    moved_clock(25 * 3600)
    again = await client.post(URL, json={"label": "old"}, headers=headers)
    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert await jobs(services, "old") == 2
    [record] = await keys(services)  # the other expired key was purged at claim time
    assert record.key == headers["Idempotency-Key"]
    assert record.expires_at > datetime.now(UTC) + timedelta(hours=24)

    replay = await client.post(URL, json={"label": "old"}, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == again.json()["id"]
    # an expired key may even be reused for another body
    moved_clock(50 * 3600)
    reused = await client.post(URL, json={"label": "new"}, headers=headers)
    assert reused.status_code == 201
    assert "Idempotent-Replayed" not in reused.headers


async def test_in_flight_conflict_then_stale_claim_is_taken_over(
    client: httpx.AsyncClient, services: Services, moved_clock: Callable[[float], None]
) -> None:
    headers = key()
    entered, release = asyncio.Event(), asyncio.Event()
    GATES["slow"] = (entered, release)
    slow = asyncio.create_task(client.post(URL, json={"label": "slow"}, headers=headers))
    await entered.wait()

    busy = await client.post(URL, json={"label": "slow"}, headers=headers)
    assert busy.status_code == 409, busy.text
    assert busy.json()["type"] == PROBLEMS + "idempotency-conflict"
    assert 1 <= int(busy.headers["Retry-After"]) <= 60
    [record] = await keys(services)
    assert record.response_status is None
    assert record.locked_until is not None

    moved_clock(61)  # the first request looks dead: the next one takes its claim over
    taken = await client.post(URL, json={"label": "slow"}, headers=headers)
    assert taken.status_code == 201, taken.text
    assert "Idempotent-Replayed" not in taken.headers

    release.set()  # the first request wakes up too late: its work is rolled back
    late = await slow
    assert late.status_code == 409, late.text
    assert late.json()["type"] == PROBLEMS + "idempotency-conflict"
    assert await jobs(services, "slow") == 1

    replay = await client.post(URL, json={"label": "slow"}, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == taken.content


async def test_a_guest_order_token_is_not_stored_readable_and_the_replay_returns_it(
    client: httpx.AsyncClient, services: Services
) -> None:
    admin = bearer(await make_admin(services, client))
    client.cookies.clear()  # from here on a guest: the cart cookie below is all that identifies it
    lamp = await client.post(
        "/api/v1/products", json={"name": "Lamp", "price": "5.00", "status": "active", "stock": 3}, headers=admin
    )
    assert lamp.status_code == 201, lamp.text
    added = await client.post("/api/v1/cart/items", json={"product_id": lamp.json()["id"], "quantity": 2})
    assert added.status_code == 201, added.text
    body = {
        "email": "guest@example.com",
        "shipping_address": {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "line1": "12 St James's Square",
            "city": "London",
            "postal_code": "SW1Y 4JH",
            "country": "GB",
        },
    }
    headers = key()

    placed = await client.post("/api/v1/orders", json=body, headers=headers)

    assert placed.status_code == 201, placed.text
    token = placed.json()["order_token"]
    assert token
    [row] = await raw_rows(services)
    stored = [value for value in row if isinstance(value, bytes | str)]
    assert not any(token.encode() in v if isinstance(v, bytes) else token in v for v in stored)
    [record] = await keys(services)
    assert record.response_status == 201 and record.response_body is not None
    assert placed.json()["number"].encode() not in record.response_body  # the whole body is sealed

    replay = await client.post("/api/v1/orders", json=body, headers=headers)
    assert replay.status_code == 201, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == placed.content and replay.json()["order_token"] == token
    order_id = placed.json()["id"]
    mine = await client.get(f"/api/v1/orders/{order_id}", headers={"X-Order-Token": token})
    assert mine.status_code == 200, mine.text
    async with services.db.session(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 1


@pytest.mark.parametrize(
    "stored",
    [Fernet(Fernet.generate_key()).encrypt(b'{"label": "x"}'), b'{"label": "x"}'],
    ids=["another-secret", "unsealed"],
)
async def test_a_stored_response_that_cannot_be_opened_is_a_conflict(
    client: httpx.AsyncClient, services: Services, stored: bytes
) -> None:
    """Sealed under an earlier ``MERCATO_SECRET_KEY`` (or stored before bodies were sealed): nothing to replay, and
    the request must not run twice."""
    headers = key()
    assert (await client.post(URL, json={"label": "x"}, headers=headers)).status_code == 201
    async with services.db.session(write=True) as session:
        await session.execute(update(IdempotencyRecord).values(response_body=stored))

    again = await client.post(URL, json={"label": "x"}, headers=headers)

    assert again.status_code == 409, again.text
    assert again.json()["type"] == PROBLEMS + "conflict"
    assert "secret key" in again.json()["detail"]
    assert "Idempotent-Replayed" not in again.headers
    assert await jobs(services, "x") == 1
    [record] = await keys(services)
    assert record.response_body == stored


async def test_openapi_documents_the_header_and_the_problems(app: FastAPI) -> None:
    operation = app.openapi()["paths"]["/api/v1/test-idempotency/{bucket}/jobs"]["post"]
    [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header"
    assert header["required"] is False
    assert "24 h" in header["description"]
    assert header["schema"]["maxLength"] == 255
    assert header["examples"]["uuid"]["value"] == "8e03978e-40d5-43e8-bc93-6894a57f9324"
    assert "idempotency-conflict" in operation["responses"]["409"]["description"]
    assert "`conflict`" in operation["responses"]["409"]["description"]
    assert "Retry-After" in operation["responses"]["409"]["headers"]
    assert "idempotency-mismatch" in operation["responses"]["422"]["description"]
