"""The memory budget and spools (SPEC §9.2 rule 3): waiting in line, no deadlock, no overdraft."""

from __future__ import annotations

import base64
import hashlib
import threading

import pytest

from proxy.attachments.budget import (
    BudgetWaitCancelled,
    MemoryBudget,
    Spool,
    encoded_size,
)
from proxy.smtp import mime
from tests.fixtures.waiting import wait_until


def waiter(budget: MemoryBudget, size: int, granted: list[int]) -> threading.Thread:
    thread = threading.Thread(target=lambda: granted.append(budget.acquire(size)), daemon=True)
    thread.start()
    return thread


def test_acquire_within_the_budget_returns_at_once_and_release_gives_back() -> None:
    budget = MemoryBudget(100)
    assert budget.acquire(60) == 60
    assert budget.used_bytes == 60
    assert not budget.try_acquire(50)
    budget.release(60)
    assert budget.try_acquire(100)
    assert budget.peak_bytes == 100


def test_a_request_waits_until_enough_is_released() -> None:
    budget = MemoryBudget(100)
    budget.acquire(80)
    granted: list[int] = []
    thread = waiter(budget, 50, granted)
    wait_until(lambda: budget._queue, what="the waiter to queue")
    assert granted == []
    budget.release(80)
    thread.join(5)
    assert granted == [50]


def test_a_request_larger_than_the_budget_gets_all_of_it_once_free() -> None:
    budget = MemoryBudget(100)
    budget.acquire(30)
    granted: list[int] = []
    thread = waiter(budget, 500, granted)
    wait_until(lambda: budget._queue, what="the waiter to queue")
    budget.release(30)
    thread.join(5)
    assert granted == [100]
    assert budget.used_bytes == 100


def test_waiters_are_served_in_order_and_small_requests_do_not_jump_the_queue() -> None:
    budget = MemoryBudget(100)
    budget.acquire(90)
    big: list[int] = []
    thread = waiter(budget, 100, big)
    wait_until(lambda: budget._queue, what="the big waiter to queue")
    assert not budget.try_acquire(5)  # 10 bytes are free, but someone is waiting
    budget.release(90)
    thread.join(5)
    assert big == [100]


def test_a_cancelled_wait_holds_nothing() -> None:
    budget = MemoryBudget(10)
    budget.acquire(10)
    stop = threading.Event()
    stop.set()
    with pytest.raises(BudgetWaitCancelled):
        budget.acquire(5, stop.is_set)
    budget.release(10)
    assert budget.used_bytes == 0
    assert budget.try_acquire(10)


def test_a_small_spool_stays_in_memory_under_the_budget() -> None:
    budget = MemoryBudget(1000)
    spool = Spool(budget, threshold_bytes=100)
    spool.write(b"a" * 40)
    spool.write(b"b" * 40)
    assert spool.in_memory
    assert spool.held_bytes == 80
    assert budget.used_bytes == 80
    assert spool.read_bytes() == b"a" * 40 + b"b" * 40
    spool.close()
    assert budget.used_bytes == 0


def test_a_spool_above_the_threshold_moves_to_disk_and_gives_its_budget_back() -> None:
    budget = MemoryBudget(1000)
    spool = Spool(budget, threshold_bytes=100)
    chunks = [bytes([i]) * 30 for i in range(10)]
    for chunk in chunks:
        spool.write(chunk)
    assert not spool.in_memory
    assert budget.used_bytes == 0
    assert spool.read_bytes() == b"".join(chunks)
    assert spool.size_bytes == 300
    assert spool.md5 == hashlib.md5(b"".join(chunks), usedforsecurity=False).hexdigest()
    assert b"".join(spool.chunks(7)) == b"".join(chunks)
    spool.close()


def test_a_spool_goes_to_disk_when_the_budget_is_spent() -> None:
    budget = MemoryBudget(50)
    budget.acquire(45)
    spool = Spool(budget, threshold_bytes=100)
    spool.write(b"x" * 10)
    assert not spool.in_memory
    assert budget.used_bytes == 45
    spool.close()


def test_rollover_keeps_the_content() -> None:
    budget = MemoryBudget(1000)
    spool = Spool(budget)
    spool.write(b"hello")
    spool.rollover()
    spool.write(b" world")
    assert not spool.in_memory
    assert budget.used_bytes == 0
    assert spool.read_bytes() == b"hello world"
    spool.close()


@pytest.mark.parametrize("size", [0, 1, 2, 3, 56, 57, 58, 1000, 57 * 76, 100_000])
def test_encoded_size_is_what_mime_writes(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    built = mime.build(
        {"id": "x", "from": "a@b.example", "to": ["c@d.example"], "subject": "s", "body": "b"},
        pk="pk",
        now_ts=1,
        attachments=[mime.AttachmentContent("f.bin", "application/octet-stream", data)],
    )
    body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    assert len(body) == encoded_size(size)
    assert body in built.data
