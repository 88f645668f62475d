"""``ursus-gateway sandbox``: run the offline Stripe simulator until Ctrl-C/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, TextIO

from gateway.sandbox.server import SandboxServer
from gateway.wsgi_server import PortInUseError


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``sandbox`` subcommand; its handler is ``args.func(args)``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox",
        help="run an offline Stripe simulator on loopback",
        description="Serve a fake Stripe API (payment intents, charges, transfers, refunds, "
        "events) and send signed webhooks. All secrets are fake test values.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--webhook-url", default=None, help="where to POST events")
    parser.add_argument("--webhook-secret", default=None, help="whsec_... (default: random)")
    parser.add_argument("--secret-key", default=None, help="sk_test_... (default: random)")
    parser.add_argument("--account", default=None, help="connected acct_... (default: random)")
    parser.set_defaults(func=run, handler=run)
    return parser


def _validate(args: argparse.Namespace) -> str | None:
    if args.secret_key and not args.secret_key.startswith("sk_test_"):
        return "--secret-key must start with sk_test_ (the sandbox is test mode only)"
    if args.webhook_secret and not args.webhook_secret.startswith("whsec_"):
        return "--webhook-secret must start with whsec_"
    if args.account and not args.account.startswith("acct_"):
        return "--account must start with acct_"
    return None


def run(
    args: argparse.Namespace,
    *,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
) -> int:
    """Start the sandbox, print how to use it, serve until a signal or ``stop``."""
    out = out or sys.stdout
    problem = _validate(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    sandbox = SandboxServer(
        host=args.host,
        port=args.port,
        secret_key=args.secret_key,
        webhook_secret=args.webhook_secret,
        connected_account_id=args.account,
        webhook_url=args.webhook_url,
    )
    try:
        sandbox.start()
    except PortInUseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stop = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        # These are fake sandbox credentials, printed so they can be pasted.
        print(f"Stripe sandbox listening on {sandbox.url}", file=out)
        print(f"  URSUS_STRIPE_API_BASE={sandbox.url}", file=out)
        print(f"  STRIPE_SECRET_KEY={sandbox.secret_key}", file=out)
        print(f"  STRIPE_WEBHOOK_SECRET={sandbox.webhook_secret}", file=out)
        print(f"  CONNECTED_ACCOUNT_ID={sandbox.connected_account_id}", file=out)
        print(f"  webhooks -> {sandbox.webhook_url or '(none: events are only stored)'}", file=out)
        print("Press Ctrl-C to stop.", file=out, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sandbox.stop()
        print("Stripe sandbox stopped.", file=out, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m gateway.sandbox.cli sandbox ...``."""
    parser = argparse.ArgumentParser(prog="ursus-sandbox")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
