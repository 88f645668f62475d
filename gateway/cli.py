"""`ursus-gateway`: the headless gateway (secrets from environment variables)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from gateway import __version__
from gateway.config import (
    GatewayConfig,
    default_config_path,
    default_data_dir,
    load_settings,
)
from gateway.errors import StorageError
from gateway.models import ChargeFilter

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

log = logging.getLogger("gateway.cli")


def _parse_date(text: str) -> int:
    """YYYY-MM-DD (UTC midnight) or a full ISO timestamp -> UTC epoch seconds."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date: use YYYY-MM-DD or an ISO 8601 timestamp"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp())


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the ledger lives (default: $URSUS_DATA_DIR or the platform data dir)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="settings JSON file (default: $URSUS_CONFIG_DIR/settings.json or the platform "
        "config dir)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="where access.log and error.log go (default: <data-dir>/logs when --data-dir is "
        "given, else $URSUS_LOG_DIR or the platform log dir)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ursus-gateway",
        description="URSUS headless gateway: Stripe webhook -> fee split -> vendor transfer.",
    )
    parser.add_argument("--version", action="version", version=f"ursus-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway until Ctrl-C / SIGTERM")
    _common(serve)
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 4242; 0 = any)")
    serve.add_argument(
        "--sandbox",
        action="store_true",
        help="use the built-in offline Stripe simulator with generated test secrets",
    )
    serve.set_defaults(handler=cmd_serve)

    check = sub.add_parser("check-config", help="say what is missing or malformed (exit 2)")
    _common(check)
    check.set_defaults(handler=cmd_check_config)

    export = sub.add_parser("export", help="write the ledger as CSV, one row per charge")
    _common(export)
    export.add_argument("--out", type=Path, required=True, help="CSV file to write ('-' = stdout)")
    export.add_argument("--since", type=_parse_date, default=None, help="created on/after DATE")
    export.add_argument("--until", type=_parse_date, default=None, help="created before DATE")
    export.add_argument(
        "--sandbox",
        action="store_true",
        help="export the sandbox's own ledger (what serve --sandbox and simulate-payment record)",
    )
    export.set_defaults(handler=cmd_export)

    retry = sub.add_parser("retry-transfer", help="retry a failed transfer by hand")
    _common(retry)
    retry.add_argument("charge_id", help="the charge (ch_...) whose transfer failed")
    retry.set_defaults(handler=cmd_retry_transfer)

    simulate = sub.add_parser(
        "simulate-payment",
        help="drive sales through the sandbox end to end (intent, webhook, transfer)",
    )
    _common(simulate)
    simulate.add_argument("--amount", type=int, default=10000, help="minor units (10000 = $100)")
    simulate.add_argument("--currency", default="usd")
    simulate.add_argument("--order-id", default=None)
    simulate.add_argument("--count", type=int, default=1)
    simulate.set_defaults(handler=cmd_simulate_payment)

    try:
        from gateway.sandbox import cli as sandbox_cli
    except ImportError:  # pragma: no cover - the sandbox ships with the gateway
        pass
    else:
        sandbox_cli.register(sub)
    return parser


def _config(args: argparse.Namespace, *, sandbox: bool = False) -> GatewayConfig:
    """Secrets from the environment, settings from the config file, flags on top."""
    settings_path = args.config or default_config_path()
    settings = load_settings(settings_path)
    data_dir = args.data_dir or default_data_dir()
    log_dir = args.log_dir
    if log_dir is None and args.data_dir is not None:
        log_dir = args.data_dir / "logs"
    config = GatewayConfig.from_env(
        os.environ, data_dir=data_dir, settings=settings, log_dir=log_dir
    )
    overrides = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    if overrides:
        config = dataclasses.replace(
            config, settings=dataclasses.replace(config.settings, **overrides)
        )
    return config.for_sandbox() if sandbox else config


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM (main thread only); handlers restored after."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.service import ConfigError, GatewayServer, PortInUseError

    config = _config(args, sandbox=args.sandbox)
    server = GatewayServer(config, log_console=True)
    with _stop_on_signals() as stop:
        try:
            server.start()
        except ConfigError as exc:
            print(f"ursus-gateway: {exc}", file=sys.stderr)
            print("Run `ursus-gateway check-config` for details.", file=sys.stderr)
            return EXIT_CONFIG
        except (PortInUseError, StorageError) as exc:
            print(f"ursus-gateway: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        effective = server.config
        print(f"URSUS gateway {__version__} listening on {server.url} ({effective.mode} mode)")
        print(f"  webhook:  {server.webhook_url}")
        print(f"  ledger:   {effective.database_url}")
        print(f"  logs:     {effective.logs_dir}")
        if server.sandbox is not None:
            print(f"  sandbox Stripe simulator on {server.sandbox.url}")
            print(
                "  try it:   ursus-gateway simulate-payment --amount 10000  (from another terminal)"
            )
        print("Press Ctrl-C to stop.", flush=True)
        try:
            stop.wait()
        finally:
            print("Stopping…", flush=True)
            server.stop()
    print("Stopped.")
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ValueError as exc:
        print(f"settings: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    problems = config.problems()
    if problems:
        print("Configuration problems:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"Configuration OK ({config.mode} mode); data in {config.data_dir}")
    return EXIT_OK


def _open_ledger(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gateway.ledger import Ledger

    config = _config(args, sandbox=getattr(args, "sandbox", False))
    return Ledger.open(config.database_url)


def cmd_export(args: argparse.Namespace) -> int:
    from gateway.export import export_csv

    filt = ChargeFilter(since=args.since, until=args.until)
    ledger = _open_ledger(args)
    try:
        if str(args.out) == "-":
            rows = export_csv(ledger, sys.stdout, filt)
        else:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_name(args.out.name + ".part")
            with tmp.open("w", encoding="utf-8", newline="") as handle:
                rows = export_csv(ledger, handle, filt)
            os.replace(tmp, args.out)
            print(f"Exported {rows} charges to {args.out}", file=sys.stderr)
    finally:
        ledger.close()
    return EXIT_OK


def cmd_retry_transfer(args: argparse.Namespace) -> int:
    from gateway.processor import Processor, retry_transfer
    from gateway.stripe_api import StripeGateway

    config = _config(args)
    missing = [p for p in config.problems() if p.name != "URSUS_API_KEY"]
    if missing:
        for problem in missing:
            print(f"ursus-gateway: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    ledger = _open_ledger(args)
    try:
        stripe = StripeGateway(
            config.secrets.stripe_secret_key, api_base=config.settings.stripe_api_base
        )
        result = retry_transfer(ledger, stripe, args.charge_id)
        print(f"{args.charge_id}: {result}")
        if not result:
            return EXIT_FAILURE
        # Create it now rather than waiting for a running gateway's next pass; the
        # idempotency key makes a concurrent attempt by that gateway harmless.
        Processor(ledger, stripe, config).run_once()
        view = ledger.get_charge(args.charge_id)
        if view is not None:
            detail = view.transfer_id or view.error_message
            print(f"{args.charge_id}: transfer {view.transfer_status} {detail}".rstrip())
    finally:
        ledger.close()
    return EXIT_OK


def cmd_simulate_payment(args: argparse.Namespace) -> int:
    from gateway.service import GatewayServer

    if args.count < 1:
        print("ursus-gateway: --count must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    config = _config(args, sandbox=True)
    config = _with_port(config, 0)
    server = GatewayServer(config)
    server.start()
    failures = 0
    try:
        for i in range(args.count):
            order_id = args.order_id if args.count == 1 else None
            if args.order_id and args.count > 1:
                order_id = f"{args.order_id}-{i + 1}"
            try:
                charge_id = server.simulate_payment(args.amount, args.currency, order_id)
            except Exception as exc:  # report and go on with the next sale
                failures += 1
                print(f"sale {i + 1}: failed: {exc}", file=sys.stderr)
                continue
            status = server.wait_for_transfer(charge_id, timeout=15)
            view = server.ledger.get_charge(charge_id)
            if view is None or view.transfer_amount is None:
                failures += 1
                print(f"{charge_id}: no transfer recorded (status {status})", file=sys.stderr)
                continue
            print(
                f"{charge_id} order {view.order_id}: gross {view.gross} {view.currency}, "
                f"stripe fee {view.stripe_fee} ({view.fee_source}), commission "
                f"{view.commission}, transfer {view.transfer_amount} -> {status} "
                f"{view.transfer_id}"
            )
    finally:
        server.stop()
    print(f"ledger: {config.database_url}  (export it: ursus-gateway export --sandbox --out F.csv)")
    return EXIT_FAILURE if failures else EXIT_OK


def _with_port(config: GatewayConfig, port: int) -> GatewayConfig:
    return dataclasses.replace(config, settings=dataclasses.replace(config.settings, port=port))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        # One-shot commands print their result; only problems go to the console.
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logging.getLogger().addHandler(console)
    try:
        return int(args.handler(args))
    except ValueError as exc:  # settings file problems and the like
        print(f"ursus-gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StorageError as exc:
        print(f"ursus-gateway: storage: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # a file or folder the command was pointed at
        where = f" {exc.filename}" if exc.filename else ""
        print(f"ursus-gateway:{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
