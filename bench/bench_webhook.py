"""Webhook ingest: the running gateway against a bare Flask+waitress endpoint, same client.

    python bench/bench_webhook.py [--events 4000] [--concurrency 16] [--rounds 5] [--quick]
                                  [--ingest-only]

Signed ``charge.succeeded`` events (the tests/data fixture, unique event ids, each
about its own captured charge) are POSTed over loopback keep-alive connections by
one load generator process (``common.LoadClient``) to

- the gateway: a real ``GatewayServer`` (tmp data dir, log files, processor running
  against the sandbox in its own process, as against Stripe), and
- a bare endpoint: a Flask app whose ``POST /webhook`` returns the same 200 body, on
  ``WsgiServer`` with the same thread count, in the same process,

alternating the two (and which goes first) for ``--rounds`` rounds after a warm-up.
The processor runs during the gateway's rounds, working through the backlog the
events build (it is much slower than ingest), and is stopped during the bare
endpoint's so that it does not load the process then. ``--ingest-only`` keeps it
stopped: the hot path alone.

Prints events/s, p50/p99 and the server's CPU per event for each round, the medians,
and the ratios (targets: events/s ratio >= 0.6, p99 <= 2x the bare endpoint's).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask import Flask

from bench.common import (
    LoadClient,
    LoadResult,
    SandboxProcess,
    charge_event_template,
    event_body,
    gateway_config,
    load_average,
    machine,
    median,
    webhook_request,
)
from gateway.models import EventStatus
from gateway.service import GatewayServer
from gateway.wsgi_server import WsgiServer

THREADS = 8  # GatewayServer's default
RECEIVED = b'{"received":true}'


def bare_app() -> Flask:
    """The floor: Flask on waitress answering 200 without looking at the request."""
    app = Flask("bare")

    @app.post("/webhook")
    def webhook() -> tuple[bytes, int, dict[str, str]]:
        return RECEIVED, 200, {"Content-Type": "application/json"}

    return app


def requests_for(
    port: int, secret: str, charges: list[str], prefix: str, template: dict[str, object]
) -> list[bytes]:
    """One signed POST per charge (signed now: well inside the 300 s tolerance)."""
    return [
        webhook_request(
            "127.0.0.1", port, event_body(template, f"evt_{prefix}_{i:07d}", ch), secret
        )
        for i, ch in enumerate(charges)
    ]


def line(name: str, r: LoadResult) -> str:
    bad = sum(n for status, n in r.statuses.items() if status != 200) + r.errors
    return (
        f"{name:<8} {r.rate:8.0f} ev/s  p50 {r.p(50):6.2f} ms  p99 {r.p(99):6.2f} ms"
        f"  client cpu {r.client_cpu / r.wall:4.0%}" + (f"  NON-200: {bad}" if bad else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000, help="events per round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per server")
    parser.add_argument("--quick", action="store_true", help="1000 events, 3 rounds")
    parser.add_argument(
        "--ingest-only", action="store_true", help="stop the processor: the hot path alone"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.rounds = 1000, 3
    warmup = min(args.events, 1000)
    print(machine())
    print(f"load average at the start: {load_average()} (other processes skew the figures)")
    print(
        f"{args.events} signed charge.succeeded events per round, concurrency "
        f"{args.concurrency}, {args.rounds} rounds per server, {THREADS} waitress threads"
        + (", processor STOPPED (--ingest-only)" if args.ingest_only else ", processor running")
    )
    template = charge_event_template()
    with (
        tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp,
        SandboxProcess() as sandbox,
        LoadClient() as client,
    ):
        started = time.perf_counter()
        charges = sandbox.charges(warmup + args.events * args.rounds)
        print(f"sandbox: {len(charges)} charges made in {time.perf_counter() - started:.1f} s")
        gateway = GatewayServer(gateway_config(Path(tmp), sandbox), threads=THREADS)
        gateway.start()
        bare = WsgiServer(bare_app(), "127.0.0.1", 0, threads=THREADS, name="bare")
        bare.start()
        secret = sandbox.webhook_secret
        ledger = gateway.ledger
        results: dict[str, list[LoadResult]] = {"gateway": [], "bare": []}
        cpus: dict[str, list[float]] = {"gateway": [], "bare": []}
        processed, busy = 0, 0.0
        gateway.processor.stop()  # runs during the gateway's rounds only (see the docstring)
        try:
            batches = [charges[:warmup]] + [
                charges[warmup + r * args.events : warmup + (r + 1) * args.events]
                for r in range(args.rounds)
            ]
            for r, batch in enumerate(batches):
                servers = [("gateway", gateway.port), ("bare", bare.port)]
                for name, port in servers if r % 2 == 0 else servers[::-1]:
                    reqs = requests_for(port, secret, batch, f"{r}{name[0]}", template)
                    if name == "gateway" and not args.ingest_only:
                        done_before = ledger.event_counts()[EventStatus.PROCESSED]
                        gateway.processor.start()
                    before = resource.getrusage(resource.RUSAGE_SELF)
                    result = client.run("127.0.0.1", port, reqs, args.concurrency)
                    after = resource.getrusage(resource.RUSAGE_SELF)
                    if name == "gateway" and not args.ingest_only:
                        gateway.processor.stop()
                        if r:
                            processed += ledger.event_counts()[EventStatus.PROCESSED] - done_before
                            busy += result.wall
                    # Server CPU (all threads of this process) per event: less noisy than
                    # throughput on a shared machine, and it says where a gap comes from.
                    user = (after.ru_utime - before.ru_utime) / len(reqs) * 1e6
                    system = (after.ru_stime - before.ru_stime) / len(reqs) * 1e6
                    switches = (after.ru_nvcsw - before.ru_nvcsw) / len(reqs)
                    cpu = user + system
                    label = f"warm-up {name}" if r == 0 else f"round {r} {name}"
                    print(
                        line(label, result) + f"  server cpu {cpu:4.0f} us/ev"
                        f" (user {user:3.0f}, sys {system:3.0f}, {switches:4.1f} ctx sw/ev)"
                    )
                    if r:
                        cpus[name].append(cpu)
                        results[name].append(result)
            stored = sum(ledger.event_counts().values())
        finally:
            bare.stop()
            gateway.stop()
        error_log = Path(tmp, "logs", "error.log")
        lines = error_log.read_text(encoding="utf-8").splitlines() if error_log.exists() else []
        queue_lines = sum("Task queue depth" in x for x in lines)
        expected = warmup + args.events * args.rounds
    g, b = results["gateway"], results["bare"]
    g_rate, b_rate = median(r.rate for r in g), median(r.rate for r in b)
    g_p50, b_p50 = median(r.p(50) for r in g), median(r.p(50) for r in b)
    g_p99, b_p99 = median(r.p(99) for r in g), median(r.p(99) for r in b)
    rate_ratio, p99_ratio = g_rate / b_rate, g_p99 / b_p99
    print()
    print(f"medians over {args.rounds} rounds:")
    print(f"  gateway  {g_rate:8.0f} ev/s  p50 {g_p50:6.2f} ms  p99 {g_p99:6.2f} ms")
    print(f"  bare     {b_rate:8.0f} ev/s  p50 {b_p50:6.2f} ms  p99 {b_p99:6.2f} ms")
    verdict = "met" if rate_ratio >= 0.6 else "MISSED"
    print(f"  events/s ratio gateway/bare: {rate_ratio:.2f} (target >= 0.6: {verdict})")
    verdict = "met" if p99_ratio <= 2 else "MISSED"
    print(f"  p99 ratio gateway/bare:      {p99_ratio:.2f} (target <= 2: {verdict})")
    if busy:
        print(
            f"  processor during the gateway rounds: {processed} events re-fetched and"
            f" transferred ({processed / busy:.0f}/s while ingesting)"
        )
    g_cpu, b_cpu = median(cpus["gateway"]), median(cpus["bare"])
    print(
        f"  server CPU per event: gateway {g_cpu:.0f} us, bare {b_cpu:.0f} us"
        f" (CPU-bound ratio ceiling {b_cpu / g_cpu:.2f})"
    )
    print(f"  events stored in the ledger: {stored} of {expected} sent")
    print(
        f"  error.log: {len(lines)} lines, {queue_lines} of them waitress 'Task queue depth'"
        " warnings (both servers' waitress loggers write there)"
    )
    print(f"  load average at the end: {load_average()}")
    return 0 if stored == expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
