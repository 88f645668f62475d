"""GET /v1/events: newest first, cursors, type filters, delivery_success."""

from __future__ import annotations

import socket

from gateway.sandbox import SandboxServer


def test_pagination_and_type_filters(sandbox: SandboxServer, client, pay) -> None:
    for n in range(3):
        pay(1000 + n, f"o-{n}")
    all_ids = [e["id"] for e in reversed(sandbox.state.events)]  # newest first
    assert len(all_ids) == 12  # 4 events per sale

    page1 = client.v1.events.list(params={"limit": 5})
    assert [e.id for e in page1.data] == all_ids[:5] and page1.has_more
    page2 = client.v1.events.list(params={"limit": 5, "starting_after": page1.data[-1].id})
    assert [e.id for e in page2.data] == all_ids[5:10] and page2.has_more
    back = client.v1.events.list(params={"limit": 3, "ending_before": page2.data[0].id})
    assert [e.id for e in back.data] == all_ids[2:5]
    last = client.v1.events.list(params={"limit": 5, "starting_after": page2.data[-1].id})
    assert [e.id for e in last.data] == all_ids[10:] and not last.has_more

    walked = [e.id for e in client.v1.events.list(params={"limit": 2}).auto_paging_iter()]
    assert walked == all_ids

    updated = client.v1.events.list(params={"types": ["charge.updated", "charge.succeeded"]})
    assert {e.type for e in updated.data} == {"charge.updated", "charge.succeeded"}
    assert len(updated.data) == 6
    wildcard = client.v1.events.list(params={"type": "payment_intent.*", "limit": 100})
    assert len(wildcard.data) == 6
    event = client.v1.events.retrieve(updated.data[0].id)
    assert event.type == updated.data[0].type and event.api_version == "2024-06-20"


def test_delivery_success_filter(sandbox: SandboxServer, client, pay, receiver) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/webhook"
    sandbox.webhook_url = dead
    sandbox.webhooks.retry_delays = (0.01, 0.01)
    pay(1000, "lost")
    assert sandbox.wait_idle(5)  # every attempt failed, retries exhausted
    sandbox.webhook_url = receiver.url
    pay(1000, "delivered")
    assert sandbox.wait_idle(5)
    failed = client.v1.events.list(params={"delivery_success": False})
    ok = client.v1.events.list(params={"delivery_success": True})
    assert len(failed.data) == len(ok.data) == 4
    assert {e.data.object.metadata["order_id"] for e in failed.data} == {"lost"}
    assert all(e.pending_webhooks == 1 for e in failed.data)
    assert all(e.pending_webhooks == 0 for e in ok.data)
