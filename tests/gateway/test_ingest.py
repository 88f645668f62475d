"""IngestGauge: deliveries in flight are counted, and the processor gives way to a burst."""

from __future__ import annotations

from pathlib import Path

import fake_stripe
import pytest
from events import WEBHOOK_SECRET, delivery_headers, fixture
from fake_stripe import ACCOUNT, make_event
from fakes import FakeLedger, FakeStripe, make_config

from gateway.app import create_app
from gateway.config import FeeSourcePolicy, GatewayConfig, Secrets, Settings
from gateway.ingest import IngestGauge
from gateway.ledger import Ledger
from gateway.models import TransferStatus
from gateway.processor import Processor


class FakeTime:
    """A clock that moves only when the gauge sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_deliveries_are_counted_while_handled_even_when_they_fail() -> None:
    gauge = IngestGauge()
    with gauge:
        with gauge:
            assert gauge.in_flight == 2
        assert gauge.in_flight == 1
    with pytest.raises(RuntimeError), gauge:
        raise RuntimeError("handler bug")
    assert gauge.in_flight == 0


def test_no_burst_means_no_wait() -> None:
    t = FakeTime()
    gauge = IngestGauge(burst=4, sleep=t.sleep, clock=t.clock)
    for _ in range(3):
        gauge.__enter__()
    assert gauge.yield_to_ingest() == 0.0
    assert t.sleeps == []


def test_a_burst_that_lasts_is_given_way_to_for_at_most_max_wait() -> None:
    t = FakeTime()
    gauge = IngestGauge(burst=4, max_wait=0.05, sleep=t.sleep, clock=t.clock)
    for _ in range(4):
        gauge.__enter__()
    assert gauge.yield_to_ingest() == pytest.approx(0.05)
    assert gauge.waited == pytest.approx(0.05)


def test_many_deliveries_in_quick_succession_are_a_burst_too() -> None:
    t = FakeTime()
    gauge = IngestGauge(burst=4, recent=8, window=0.02, sleep=t.sleep, clock=t.clock)
    for _ in range(7):
        with gauge:  # one at a time: never 4 in flight
            t.now += 0.001
    assert not gauge.bursting()  # 7 starts are not yet 8
    with gauge:
        pass
    assert gauge.bursting()  # 8 starts within 8 ms
    t.now += 0.02
    assert not gauge.bursting()  # the burst is over


def test_one_sale_worth_of_events_is_not_a_burst() -> None:
    t = FakeTime()
    gauge = IngestGauge(sleep=t.sleep, clock=t.clock)
    for _ in range(5):  # a sale's events, within a few milliseconds
        with gauge:
            t.now += 0.001
    assert not gauge.bursting()
    assert gauge.yield_to_ingest() == 0.0


def test_the_wait_ends_as_soon_as_the_burst_does() -> None:
    t = FakeTime()
    gauge = IngestGauge(burst=2, max_wait=1.0, sleep=t.sleep, clock=t.clock)
    gauge.__enter__()
    gauge.__enter__()

    def sleep(seconds: float) -> None:
        t.sleep(seconds)
        if len(t.sleeps) == 3:
            gauge.__exit__()  # a delivery finished: no longer a burst

    gauge._sleep = sleep
    assert gauge.yield_to_ingest() == pytest.approx(3 * 0.002)


def test_the_webhook_endpoint_counts_itself_in_flight() -> None:
    gauge = IngestGauge()
    seen: list[int] = []

    class Watching(FakeLedger):
        def record_event(self, *args: object, **kwargs: object) -> bool:
            seen.append(gauge.in_flight)
            return super().record_event(*args, **kwargs)  # type: ignore[arg-type]

    app = create_app(
        make_config(webhook_secrets=(WEBHOOK_SECRET,)), Watching(), FakeStripe(), ingest=gauge
    )
    body = fixture("charge_succeeded")
    response = app.test_client().post("/webhook", data=body, headers=delivery_headers(body))
    assert response.status_code == 200
    assert seen == [1]
    assert gauge.in_flight == 0


# -- the processor gives way ---------------------------------------------------------------


def processor_with(gauge: IngestGauge, tmp_path: Path, ledger: Ledger) -> tuple[Processor, str]:
    secrets = Secrets(
        stripe_secret_key="sk_test_ingest0000",
        webhook_secrets=("whsec_test0000000",),
        connected_account_id=ACCOUNT,
        api_keys=("k" * 20,),
    )
    config = GatewayConfig(
        secrets=secrets, settings=Settings(fee_source=FeeSourcePolicy.ESTIMATE), data_dir=tmp_path
    )
    fake = fake_stripe.FakeStripe()
    charge = fake.add_charge(amount=10000)
    raw = make_event("evt_ingest_1", "charge.succeeded", charge)
    ledger.record_event("evt_ingest_1", "charge.succeeded", 1_700_000_000, False, charge, raw)
    return Processor(ledger, fake, config, ingest=gauge), charge


def test_the_processor_gives_way_to_a_burst_before_each_item(
    tmp_path: Path, ledger: Ledger
) -> None:
    t = FakeTime()
    gauge = IngestGauge(burst=1, max_wait=0.05, sleep=t.sleep, clock=t.clock)
    proc, charge = processor_with(gauge, tmp_path, ledger)
    with gauge:  # a delivery stays in flight for the whole pass
        proc.run_once()
    view = ledger.get_charge(charge)
    assert view is not None and view.transfer_status == TransferStatus.CREATED  # still done
    # One event and one transfer: two items, each after a bounded wait.
    assert gauge.waited == pytest.approx(2 * 0.05)


def test_without_a_burst_the_processor_never_waits(tmp_path: Path, ledger: Ledger) -> None:
    t = FakeTime()
    gauge = IngestGauge(burst=1, sleep=t.sleep, clock=t.clock)
    proc, charge = processor_with(gauge, tmp_path, ledger)
    proc.run_once()
    view = ledger.get_charge(charge)
    assert view is not None and view.transfer_status == TransferStatus.CREATED
    assert t.sleeps == []
