"""Signed tasks between asyncjobs v0.3.0's own CLI (``ajc tasks --sign/--verify``) and Jetbridge."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jetbridge
import pytest
from nats.aio.client import Client

from tests.asyncjobs.conftest import AJC
from tests.asyncjobs.test_asyncjobs_signing import _tamper
from tests.harness import Harness

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


@pytest.fixture
def h(nc: Client, unique: str) -> Harness:
    return Harness(nc, unique)


async def _ajc_add(ajc: AJC, *args: str) -> str:
    out = (await ajc.run("tasks", *args)).stdout
    match = re.search(r"Enqueued task (\S+)", out)
    assert match, out
    return match.group(1)


async def test_ajc_signed_task_runs_on_a_verifying_dispatcher(h: Harness, ajc: AJC, nc: Client) -> None:
    seed = os.urandom(32).hex()
    public = jetbridge.Signer(seed).public_key
    await h.make_queue()
    good = await _ajc_add(ajc, "--sign", seed, "add", "sig:t", "hello", "--queue", h.queue, "--deadline", "1h")
    bad = await _ajc_add(ajc, "--sign", os.urandom(32).hex(), "add", "sig:t", "hello", "--queue", h.queue)

    async def run(task: jetbridge.Task) -> Any:
        return task.payload

    async with h.dispatcher(verify_key=public), h.service({"sig:t": run}):
        ok = await h.producer.wait(good, timeout=20)
        refused = await h.producer.wait(bad, timeout=20)
    assert ok.state == "complete" and ok.result is not None and ok.result.value() == "hello"
    assert (refused.state, refused.last_err_code) == ("terminated", "signature")


async def test_jetbridge_signed_task_verifies_in_ajc(h: Harness, ajc: AJC, nc: Client) -> None:
    seed = os.urandom(32).hex()
    public = jetbridge.Signer(seed).public_key
    await h.make_queue()
    task_id = await jetbridge.Producer(nc, queue=h.queue, signer=jetbridge.Signer(seed)).enqueue("sig:t", {"n": 1})
    unsigned = await h.producer.enqueue("sig:t", {"n": 2})

    view = json.loads((await ajc.run("tasks", "--verify", public, "view", task_id, "--json")).stdout)
    assert (view["id"], view["signature"]) == (task_id, (await h.producer.get(task_id)).signature)
    refused = await ajc.run("tasks", "--verify", public, "view", unsigned, "--json", check=False)
    assert refused.returncode == 1 and "task is not signed" in refused.stderr
    await _tamper(nc, task_id, b'{"n":3}')
    refused = await ajc.run("tasks", "--verify", public, "view", task_id, "--json", check=False)
    assert refused.returncode == 1 and "invalid task signature" in refused.stderr
