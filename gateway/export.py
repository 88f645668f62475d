"""CSV export of the ledger's charges: streaming, constant memory, spreadsheet-safe.

Format: RFC 4180 (``,`` separated, ``"`` quoted when needed, CRLF line ends), UTF-8
without BOM, one header row. Columns are ``COLUMNS``:

- ``created_utc``: ISO 8601 UTC, ``2026-11-26T12:00:00Z``.
- ``currency``: upper case ISO 4217 code (``USD``), as accounting software expects.
- amounts (``gross stripe_fee net commission transfer_amount amount_refunded``):
  decimal strings in major units with the currency's exponent (``95.83``, JPY
  ``1000``, KWD ``1.250``); empty when not known yet (no split computed).
- ``fee_source``: ``actual``, ``estimate``, ``estimate_fallback`` or empty.
- ``transfer_status``: ``none pending created failed reversed``.
- ``livemode``: ``true`` / ``false``.

Formula injection (OWASP "CSV injection"): a text cell starting with ``= + - @``, TAB
or CR gets a leading ``'`` so a spreadsheet shows it instead of evaluating it. Only text
cells are neutralised; the amount cells are never negative, so never start with ``-``.

Open the output file with ``newline=""`` (the writer emits the CRLFs itself).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from gateway.models import ChargeFilter, TransferStatus
from gateway.money import exponent, to_major

if TYPE_CHECKING:
    from gateway.ledger import Ledger

COLUMNS = (
    "created_utc",
    "charge_id",
    "payment_intent_id",
    "order_id",
    "currency",
    "gross",
    "stripe_fee",
    "fee_source",
    "net",
    "commission",
    "transfer_amount",
    "transfer_id",
    "transfer_status",
    "amount_refunded",
    "livemode",
)

PROGRESS_EVERY = 1000
_FORMULA_START = frozenset("=+-@\t\r")


class ExportCancelled(Exception):
    """The progress callback returned False; the output holds a partial export."""


def safe_cell(text: str) -> str:
    """Neutralise a text cell a spreadsheet would evaluate as a formula."""
    return "'" + text if text[:1] in _FORMULA_START else text


# "HH:MM:" for each minute of a day and "SSZ" for each second: two lookups per row
# instead of a strftime (~100 KB, built once).
_HOUR_MINUTE = tuple(f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440))
_SECOND = tuple(f"{s:02d}Z" for s in range(60))


def _amount_spec(currency: str) -> tuple[int, str]:
    """(scale, %-pattern) turning minor units into major units, as money.to_major."""
    places = exponent(currency)
    return 10**places, f"%d.%0{places}d"


def export_csv(
    ledger: Ledger,
    out: TextIO,
    filter: ChargeFilter = ChargeFilter(),  # noqa: B008 - frozen, so a safe default
    progress: Callable[[int], bool] | None = None,
) -> int:
    """Write the charges selected by ``filter``, oldest first, as CSV; return the row count.

    ``progress(rows_so_far)`` is called every PROGRESS_EVERY rows and once at the end;
    returning False (not merely a falsy value) stops with ExportCancelled.
    """
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    specs: dict[str, tuple[int, str, str]] = {}  # currency -> scale, pattern, CSV code
    hour_minute, seconds = _HOUR_MINUTE, _SECOND
    day_cache: dict[int, str] = {}
    risky = _FORMULA_START
    no_transfer = TransferStatus.NONE.value
    batch: list[tuple[str, ...]] = []
    append = batch.append
    written = 0
    # The hot loop of a million-row export: raw rows, locals, no per-cell calls for the
    # common case (amounts are never negative: fees and splits are clamped).
    for (
        _seq,
        charge_id,
        pi_id,
        order_id,
        currency,
        gross,
        refunded,
        _captured,
        created,
        livemode,
        fee,
        fee_source,
        commission,
        transfer_amount,
        transfer_id,
        status,
        _error_code,
        _error_message,
    ) in ledger.iter_charge_rows(filter, batch=PROGRESS_EVERY):
        spec = specs.get(currency)
        if spec is None:
            scale, pattern = _amount_spec(currency)
            spec = specs[currency] = (scale, pattern, safe_cell(currency.upper()))
        scale, pattern, code = spec
        day, second = divmod(created, 86400)
        prefix = day_cache.get(day)
        if prefix is None:
            if len(day_cache) > 4096:  # bounded: constant memory over any date range
                day_cache.clear()
            prefix = day_cache[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
        if scale == 1:
            a_gross, a_refunded = str(gross), str(refunded)
            a_fee = a_net = "" if fee is None else str(fee)
            if fee is not None:
                a_net = str(gross - fee)
            a_commission = "" if commission is None else str(commission)
            a_transfer = "" if transfer_amount is None else str(transfer_amount)
        elif (
            gross >= 0
            and refunded >= 0
            and (fee is None or 0 <= fee <= gross)
            and (commission is None or commission >= 0)
            and (transfer_amount is None or transfer_amount >= 0)
        ):
            a_gross = pattern % divmod(gross, scale)
            a_refunded = pattern % divmod(refunded, scale)
            if fee is None:
                a_fee = a_net = ""
            else:
                a_fee = pattern % divmod(fee, scale)
                a_net = pattern % divmod(gross - fee, scale)
            a_commission = "" if commission is None else pattern % divmod(commission, scale)
            a_transfer = "" if transfer_amount is None else pattern % divmod(transfer_amount, scale)
        else:  # a negative amount (never expected): divmod floors, to_major does not
            net = None if fee is None else gross - fee
            a_gross, a_fee, a_net, a_commission, a_transfer, a_refunded = (
                "" if v is None else to_major(v, currency)
                for v in (gross, fee, net, commission, transfer_amount, refunded)
            )
        append(
            (
                prefix + hour_minute[second // 60] + seconds[second % 60],
                "'" + charge_id if charge_id[:1] in risky else charge_id,
                "'" + pi_id if pi_id[:1] in risky else pi_id,
                "'" + order_id if order_id[:1] in risky else order_id,
                code,
                a_gross,
                a_fee,
                fee_source or "",
                a_net,
                a_commission,
                a_transfer,
                ""
                if transfer_id is None
                else ("'" + transfer_id if transfer_id[:1] in risky else transfer_id),
                status or no_transfer,
                a_refunded,
                "true" if livemode else "false",
            )
        )
        if len(batch) == PROGRESS_EVERY:
            writer.writerows(batch)
            written += PROGRESS_EVERY
            batch.clear()
            if progress is not None and progress(written) is False:
                raise ExportCancelled(f"export cancelled after {written} rows")
    writer.writerows(batch)
    written += len(batch)
    if progress is not None:
        progress(written)
    return written
