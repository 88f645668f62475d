"""The payments table: a lazily paged model over the ledger, and its thin proxy.

Filtering and ordering happen in SQL (``ChargeFilter``, ``charges_page``), so a
ledger of a million charges opens with one COUNT and one page of rows. The proxy
forwards sorting to the model instead of sorting itself (which would read every
row); only the time column sorts, since that is the order the ledger pages in.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QDateTime,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QThread,
    Signal,
)
from PySide6.QtGui import QBrush, QColor

from gateway.errors import StorageError
from gateway.fees import FeeSource
from gateway.models import ChargeFilter, ChargeView, Totals, TransferStatus
from gateway.money import to_major
from ursus_desktop.reader import LedgerReader

if TYPE_CHECKING:
    from gateway.ledger import Ledger

log = logging.getLogger(__name__)

PAGE_SIZE = 200
MAX_PAGES = 64  # LRU: ~13k rows in memory at most

SORT_ROLE = Qt.ItemDataRole.UserRole + 1  # raw value (int/str) to sort on
CHARGE_ROLE = Qt.ItemDataRole.UserRole + 2  # the whole ChargeView


class Column(enum.IntEnum):
    TIME = 0
    ORDER = enum.auto()
    CHARGE = enum.auto()
    GROSS = enum.auto()
    FEE = enum.auto()
    COMMISSION = enum.auto()
    TRANSFER = enum.auto()
    STATUS = enum.auto()
    REFUNDED = enum.auto()


HEADERS: dict[Column, str] = {
    Column.TIME: "Time",
    Column.ORDER: "Order",
    Column.CHARGE: "Charge",
    Column.GROSS: "Gross",
    Column.FEE: "Stripe fee",
    Column.COMMISSION: "Commission",
    Column.TRANSFER: "Vendor transfer",
    Column.STATUS: "Transfer",
    Column.REFUNDED: "Refunded",
}

_AMOUNT_COLUMNS = frozenset(
    {Column.GROSS, Column.FEE, Column.COMMISSION, Column.TRANSFER, Column.REFUNDED}
)

STATUS_TEXT: dict[TransferStatus, str] = {
    TransferStatus.NONE: "not due yet",
    TransferStatus.PENDING: "pending",
    TransferStatus.CREATED: "transferred",
    TransferStatus.FAILED: "FAILED",
    TransferStatus.REVERSED: "reversed",
}

_STATUS_COLOUR: dict[TransferStatus, str] = {
    TransferStatus.PENDING: "#ef6c00",
    TransferStatus.CREATED: "#2e7d32",
    TransferStatus.FAILED: "#c62828",
    TransferStatus.REVERSED: "#6a1b9a",
}


def money(amount: int | None, currency: str) -> str:
    """'95.83 USD'; an em dash when not known yet."""
    if amount is None:
        return "—"
    return f"{to_major(amount, currency)} {currency.upper()}"


def local_time(epoch: int) -> str:
    return QDateTime.fromSecsSinceEpoch(int(epoch)).toString("yyyy-MM-dd HH:mm:ss")


def fee_text(view: ChargeView) -> str:
    if view.stripe_fee is None:
        return "—"
    marker = "" if view.fee_source == FeeSource.ACTUAL else " (est.)"
    return money(view.stripe_fee, view.currency) + marker


def sort_value(view: ChargeView, column: Column) -> Any:
    """The raw value behind a cell (STYLE §4: sort on raw values, format at the edge)."""
    return {
        Column.TIME: view.created,
        Column.ORDER: view.order_id,
        Column.CHARGE: view.charge_id,
        Column.GROSS: view.gross,
        Column.FEE: view.stripe_fee if view.stripe_fee is not None else -1,
        Column.COMMISSION: view.commission if view.commission is not None else -1,
        Column.TRANSFER: view.transfer_amount if view.transfer_amount is not None else -1,
        Column.STATUS: str(view.transfer_status),
        Column.REFUNDED: view.amount_refunded,
    }[column]


def display_value(view: ChargeView, column: Column) -> str:
    if column is Column.TIME:
        return local_time(view.created)
    if column is Column.ORDER:
        return view.order_id
    if column is Column.CHARGE:
        return view.charge_id
    if column is Column.GROSS:
        return money(view.gross, view.currency)
    if column is Column.FEE:
        return fee_text(view)
    if column is Column.COMMISSION:
        return money(view.commission, view.currency)
    if column is Column.TRANSFER:
        return money(view.transfer_amount, view.currency)
    if column is Column.STATUS:
        return STATUS_TEXT.get(view.transfer_status, str(view.transfer_status))
    return money(view.amount_refunded, view.currency) if view.amount_refunded else ""


class ChargesModel(QAbstractTableModel):
    """Rows of ``ChargeView`` newest first, read a page at a time from the ledger.

    The row count and the totals are read off the GUI thread (``LedgerReader``):
    a COUNT or a SUM over a million charges must not stall the window. Until the
    first count arrives the table is empty; ``counted`` says when it has.
    """

    totals_changed = Signal()
    counted = Signal()  # a new row count was applied

    def __init__(self, parent: QObject | None = None, reader: LedgerReader | None = None) -> None:
        super().__init__(parent)
        self._reader = reader if reader is not None else LedgerReader(self)
        self._lane = f"charges-{id(self)}"
        self._ledger: Ledger | None = None
        self._filter = ChargeFilter()
        self._generation = 0  # bumped when ledger or filter change: older reads are stale
        self._count = 0
        self._pages: OrderedDict[int, list[ChargeView]] = OrderedDict()
        self._ascending = False
        self._totals: list[Totals] = []
        self.page_loads = 0  # for tests: how many pages were read

    # -- GUI-thread mutators ----------------------------------------------------------

    def _assert_gui_thread(self) -> None:
        assert QThread.currentThread() is self.thread(), "model mutators run on the GUI thread"

    def set_ledger(self, ledger: Ledger | None) -> None:
        self._assert_gui_thread()
        self._reset(ledger, self._filter)

    def set_filter(self, charge_filter: ChargeFilter) -> None:
        self._assert_gui_thread()
        if charge_filter == self._filter:
            return
        self._reset(self._ledger, charge_filter)

    def refresh(self) -> None:
        """Re-read after a ledger change: new rows are inserted, the rest re-drawn."""
        self._assert_gui_thread()
        self._request_summary()

    def _reset(self, ledger: Ledger | None, charge_filter: ChargeFilter) -> None:
        self.beginResetModel()
        self._ledger = ledger
        self._filter = charge_filter
        self._generation += 1
        self._pages.clear()
        self._count = 0
        self._totals = []
        self.endResetModel()
        self.totals_changed.emit()
        self._request_summary()

    def _request_summary(self) -> None:
        ledger, charge_filter, generation = self._ledger, self._filter, self._generation
        if ledger is None:
            return
        self._reader.submit(
            f"{self._lane}-count",
            lambda: ledger.count_charges(charge_filter),
            lambda count: self._apply_count(generation, count),
        )
        self._reader.submit(
            f"{self._lane}-totals",
            lambda: ledger.totals(charge_filter),
            lambda totals: self._apply_totals(generation, totals),
        )

    def _apply_count(self, generation: int, new: int) -> None:
        if generation != self._generation:
            return  # read for a ledger or filter no longer shown
        old = self._count
        self._pages.clear()
        if new > old:
            # Newer charges sort first; in ascending order they append at the end.
            first = old if self._ascending else 0
            self.beginInsertRows(QModelIndex(), first, first + new - old - 1)
            self._count = new
            self.endInsertRows()
        elif new < old:
            self.beginResetModel()
            self._count = new
            self.endResetModel()
        if self._count:
            self.dataChanged.emit(self.index(0, 0), self.index(self._count - 1, len(Column) - 1))
        self.counted.emit()

    def _apply_totals(self, generation: int, totals: list[Totals]) -> None:
        if generation != self._generation:
            return
        self._totals = totals
        self.totals_changed.emit()

    # -- reading ------------

    @property
    def charge_filter(self) -> ChargeFilter:
        return self._filter

    @property
    def totals(self) -> list[Totals]:
        return self._totals

    def charge_at(self, row: int) -> ChargeView | None:
        if not 0 <= row < self._count or self._ledger is None:
            return None
        # Ascending order is the descending pages read from the other end.
        position = self._count - 1 - row if self._ascending else row
        page_no, offset = divmod(position, PAGE_SIZE)
        page = self._pages.get(page_no)
        if page is None:
            try:
                page = self._ledger.charges_page(self._filter, page_no * PAGE_SIZE, PAGE_SIZE)
            except StorageError:
                log.warning("a page of the ledger could not be read", exc_info=True)
                return None
            self.page_loads += 1
            self._pages[page_no] = page
            while len(self._pages) > MAX_PAGES:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(page_no)
        return page[offset] if offset < len(page) else None

    def row_of(self, charge_id: str) -> int | None:
        """The row of a charge among the loaded pages (after a refresh: None until read)."""
        for page_no, page in self._pages.items():
            for offset, view in enumerate(page):
                if view.charge_id == charge_id:
                    position = page_no * PAGE_SIZE + offset
                    return self._count - 1 - position if self._ascending else position
        return None

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else self._count

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(Column)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[Column(section)]
        return None

    def data(
        self,
        index: QModelIndex | QPersistentModelIndex,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        if not index.isValid():
            return None
        view = self.charge_at(index.row())
        if view is None:
            return None
        column = Column(index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            return display_value(view, column)
        if role == SORT_ROLE:
            return sort_value(view, column)
        if role == CHARGE_ROLE:
            return view
        if role == Qt.ItemDataRole.TextAlignmentRole and column in _AMOUNT_COLUMNS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and column is Column.STATUS:
            colour = _STATUS_COLOUR.get(view.transfer_status)
            return QBrush(QColor(colour)) if colour else None
        if role == Qt.ItemDataRole.ToolTipRole:
            if column is Column.STATUS and view.error_code:
                return f"{view.error_code}: {view.error_message}"
            if column is Column.FEE and view.fee_source is not None:
                return f"fee source: {view.fee_source}"
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Only time sorts (the ledger's paging order); other columns keep it."""
        if column != Column.TIME:
            return
        ascending = order == Qt.SortOrder.AscendingOrder
        if ascending == self._ascending:
            return
        self.layoutAboutToBeChanged.emit()
        self._ascending = ascending
        self.layoutChanged.emit()


class ChargesProxy(QSortFilterProxyModel):
    """The view's proxy: sorting is forwarded to SQL order, filtering is done in SQL."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(False)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        # QSortFilterProxyModel.sort would read every row of a million-row ledger.
        source = self.sourceModel()
        if isinstance(source, ChargesModel):
            source.sort(column, order)
