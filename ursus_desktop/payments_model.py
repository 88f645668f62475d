"""The payments table: a lazily paged model over the ledger, and its thin proxy.

Filtering and ordering happen in SQL (``ChargeFilter``, ``charges_page``), so a
ledger of a million charges opens with one COUNT and one page of rows. The proxy
forwards sorting to the model instead of sorting itself (which would read every
row); only the time column sorts, since that is the order the ledger pages in.

The GUI thread never reads the ledger: counts, totals and pages of rows are read by
``LedgerReader`` and formatted there too. Painting calls into Python as few times as
it can (``multiData``, ``index``): with the gateway busy in the same process, every
call from Qt into Python waits for the GIL, and a table repaint used to make ~4,700.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, TypeAlias

from PySide6.QtCore import (
    QAbstractTableModel,
    QDateTime,
    QModelIndex,
    QModelRoleData,
    QModelRoleDataSpan,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QThread,
    Signal,
)
from PySide6.QtGui import QBrush, QColor

from gateway.fees import FeeSource
from gateway.models import ChargeFilter, ChargeView, Totals, TransferStatus
from gateway.money import to_major
from ursus_desktop.reader import LedgerReader

if TYPE_CHECKING:
    from gateway.ledger import Ledger

log = logging.getLogger(__name__)

PAGE_SIZE = 200
MAX_PAGES = 64  # LRU: ~13k rows in memory at most
_INTEREST = 4  # pages of rows last looked at, read again with each new count

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


_COLUMNS = len(Column)
_HEADER_TEXTS = tuple(HEADERS[column] for column in Column)
_STATUS_COLUMN = int(Column.STATUS)
_FEE_COLUMN = int(Column.FEE)
_ALIGN_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_AMOUNT_COLUMN_NUMBERS = frozenset(int(c) for c in _AMOUNT_COLUMNS)
_DISPLAY = int(Qt.ItemDataRole.DisplayRole)
_ALIGNMENT = int(Qt.ItemDataRole.TextAlignmentRole)
_FOREGROUND = int(Qt.ItemDataRole.ForegroundRole)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
_SORT = int(SORT_ROLE)
_CHARGE = int(CHARGE_ROLE)
_brushes: dict[TransferStatus, QBrush] = {}  # made on the GUI thread, on first use

# A cached row: the charge, its display texts by column, and the epoch it was read in.
_Entry: TypeAlias = tuple[ChargeView, tuple[str, ...], int]
_Rows: TypeAlias = list[tuple[ChargeView, tuple[str, ...]]]  # a page as read


def _read_rows(ledger: Ledger, charge_filter: ChargeFilter, offset: int) -> _Rows:
    """A page of rows with their display texts (worker thread: read and format)."""
    views = ledger.charges_page(charge_filter, offset, PAGE_SIZE)
    return [(v, tuple(display_value(v, column) for column in Column)) for v in views]


def _read_count_and_pages(
    ledger: Ledger, charge_filter: ChargeFilter, row_pages: list[int], ascending: bool
) -> tuple[int, list[tuple[int, _Rows]]]:
    """The row count, then the pages holding the given pages of rows (worker thread).

    Read in one job so that the rows the view shows arrive with the new count: one
    repaint per change, with fresh rows, instead of one with stale rows and another.
    """
    count = ledger.count_charges(charge_filter)
    page_numbers: dict[int, None] = {}
    for row_page in row_pages:
        first = row_page * PAGE_SIZE
        last = min(first + PAGE_SIZE, count) - 1
        for row in (first, last) if first <= last else ():
            position = count - 1 - row if ascending else row
            page_numbers[position // PAGE_SIZE] = None
    return count, [(n, _read_rows(ledger, charge_filter, n * PAGE_SIZE)) for n in page_numbers]


def _status_brush(status: TransferStatus) -> QBrush | None:
    brush = _brushes.get(status)
    if brush is None:
        colour = _STATUS_COLOUR.get(status)
        if colour is None:
            return None
        brush = _brushes[status] = QBrush(QColor(colour))
    return brush


def _value(entry: _Entry, column: int, role: int) -> Any:
    """The value of one cell for one role (None: nothing for that role)."""
    if role == _DISPLAY:
        return entry[1][column]
    if role == _ALIGNMENT:
        return _ALIGN_RIGHT if column in _AMOUNT_COLUMN_NUMBERS else None
    view = entry[0]
    if role == _FOREGROUND:
        return _status_brush(view.transfer_status) if column == _STATUS_COLUMN else None
    if role == _SORT:
        return sort_value(view, Column(column))
    if role == _CHARGE:
        return view
    if role == _TOOLTIP:
        if column == _STATUS_COLUMN and view.error_code:
            return f"{view.error_code}: {view.error_message}"
        if column == _FEE_COLUMN and view.fee_source is not None:
            return f"fee source: {view.fee_source}"
    return None


class ChargesModel(QAbstractTableModel):
    """Rows of ``ChargeView`` newest first, read a page at a time from the ledger.

    Every ledger read runs off the GUI thread (``LedgerReader``): the row count, the
    totals and the pages of rows. Until a page arrives the table shows the rows it
    already has for those positions (stale rows beat blank ones; never-read rows are
    blank), then ``dataChanged`` redraws just the rows that changed. Until the first
    count arrives the table is empty; ``counted`` says when it has.

    The cache is keyed by *rank*, a row's place counted from the oldest charge: new
    charges arrive at the top (newest first), so a rank keeps naming the same charge
    while a burst of sales grows the table, where a row number would not.
    """

    totals_changed = Signal()
    counted = Signal()  # a new row count was applied
    page_loaded = Signal()  # a page of rows arrived (tests and benches wait on it)

    def __init__(self, parent: QObject | None = None, reader: LedgerReader | None = None) -> None:
        super().__init__(parent)
        self._reader = reader if reader is not None else LedgerReader(self)
        self._lane = f"charges-{id(self)}"
        self._ledger: Ledger | None = None
        self._filter = ChargeFilter()
        self._generation = 0  # bumped when ledger or filter change: older reads are dropped
        self._epoch = 0  # bumped at every applied count: pages read before are stale
        self._count = 0
        # rank // PAGE_SIZE -> PAGE_SIZE slots of (view, display texts, epoch read in), LRU.
        self._pages: OrderedDict[int, list[_Entry | None]] = OrderedDict()
        self._asked: set[int] = set()  # ledger pages (by offset) requested in this epoch
        # Rows looked up in this epoch (by row // PAGE_SIZE, in order), and the last such
        # set: the rows the view shows, read again with each new count.
        self._looked: dict[int, None] = {}
        self._interest: list[int] = [0]
        self._ascending = False
        self._totals: list[Totals] = []
        self.page_loads = 0  # for tests: how many pages were read and applied

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
        self._epoch += 1
        # Rows of another ledger or filter are never shown, not even as stale rows.
        self._pages.clear()
        self._asked.clear()
        self._looked.clear()
        self._interest = [0]  # the first rows come with the first count
        self._count = 0
        self._totals = []
        self.endResetModel()
        self.totals_changed.emit()
        self._request_summary()

    def _request_summary(self) -> None:
        ledger, charge_filter, generation = self._ledger, self._filter, self._generation
        if ledger is None:
            return
        # The rows the view showed since the last count (else those before): read again
        # with the count, so a change repaints once, with fresh rows.
        interest = list(self._looked)[-_INTEREST:] or self._interest
        ascending = self._ascending
        self._reader.submit(
            f"{self._lane}-count",
            lambda: _read_count_and_pages(ledger, charge_filter, interest, ascending),
            lambda result: self._apply_count(generation, interest, *result),
        )
        self._reader.submit(
            f"{self._lane}-totals",
            lambda: ledger.totals(charge_filter),
            lambda totals: self._apply_totals(generation, totals),
        )

    def _apply_count(
        self, generation: int, interest: list[int], new: int, pages: list[tuple[int, _Rows]]
    ) -> None:
        if generation != self._generation:
            return  # read for a ledger or filter no longer shown
        old = self._count
        # Whatever was read before may have changed: pages are asked for again, and until
        # they arrive the view keeps the rows it has (by rank, so they stay in place).
        self._epoch += 1
        self._interest = interest
        self._asked.clear()
        self._looked.clear()
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
        for page_no, rows in pages:  # read with this count: fresh in this epoch
            self._asked.add(page_no)
            self._store_page(self._epoch, new, page_no * PAGE_SIZE, rows)
        self.counted.emit()
        if pages:
            self.page_loaded.emit()

    def _apply_totals(self, generation: int, totals: list[Totals]) -> None:
        if generation != self._generation:
            return
        self._totals = totals
        self.totals_changed.emit()

    def _request_page(self, page_no: int) -> None:
        """Read ledger page ``page_no`` (newest first) off the GUI thread."""
        ledger = self._ledger
        if ledger is None:
            return
        self._asked.add(page_no)
        charge_filter, generation, epoch, count = (
            self._filter,
            self._generation,
            self._epoch,
            self._count,
        )
        offset = page_no * PAGE_SIZE
        # A lane per page: pages read in parallel, and a newer request for a page
        # replaces an older one still waiting.
        self._reader.submit(
            f"{self._lane}-page-{page_no}",
            lambda: _read_rows(ledger, charge_filter, offset),
            lambda rows: self._apply_page(generation, epoch, count, offset, rows),
            lambda message: self._page_failed(generation, message),
        )

    def _apply_page(
        self, generation: int, epoch: int, count: int, offset: int, rows: _Rows
    ) -> None:
        if generation != self._generation:
            return  # rows of a ledger or filter no longer shown: never displayed
        self._store_page(epoch, count, offset, rows)
        self.page_loaded.emit()

    def _store_page(self, epoch: int, count: int, offset: int, rows: _Rows) -> None:
        """Cache rows read at ``offset`` when the table had ``count``; redraw changed rows."""
        self.page_loads += 1
        top = count - 1 - offset  # the rank of the first row read, as counted then
        changed: list[int] = []
        pages = self._pages
        for i, (view, texts) in enumerate(rows):
            rank = top - i
            if rank < 0:
                break
            key, slot = divmod(rank, PAGE_SIZE)
            page = pages.get(key)
            if page is None:
                page = pages[key] = [None] * PAGE_SIZE
            else:
                pages.move_to_end(key)
            old = page[slot]
            if old is not None and old[2] > epoch:
                continue  # a later read already put a fresher row here
            page[slot] = (view, texts, epoch)
            if old is None or old[0] != view:
                changed.append(rank)
        while len(pages) > MAX_PAGES:
            pages.popitem(last=False)
        visible = [rank for rank in changed if rank < self._count]
        if visible:
            rows_changed = [self._row_of_rank(rank) for rank in (visible[0], visible[-1])]
            self.dataChanged.emit(
                self.index(min(rows_changed), 0), self.index(max(rows_changed), _COLUMNS - 1)
            )

    def _page_failed(self, generation: int, message: str) -> None:
        # The view keeps what it shows; the page is asked for again after the next change.
        if generation == self._generation:
            log.warning("a page of the ledger could not be read: %s", message)

    def _row_of_rank(self, rank: int) -> int:
        return rank if self._ascending else self._count - 1 - rank

    # -- reading ------------

    @property
    def charge_filter(self) -> ChargeFilter:
        return self._filter

    @property
    def totals(self) -> list[Totals]:
        return self._totals

    def _entry(self, row: int) -> _Entry | None:
        """The cached row (possibly stale); asks for its page unless read in this epoch."""
        count = self._count
        if not 0 <= row < count:
            return None
        rank = row if self._ascending else count - 1 - row
        page_no = (count - 1 - rank) // PAGE_SIZE
        if page_no not in self._asked:
            self._request_page(page_no)
        looked = row // PAGE_SIZE
        if looked not in self._looked:
            self._looked[looked] = None
        key, slot = divmod(rank, PAGE_SIZE)
        page = self._pages.get(key)
        if page is None:
            return None
        self._pages.move_to_end(key)
        return page[slot]

    def charge_at(self, row: int) -> ChargeView | None:
        """The charge shown at ``row``: possibly stale, None if never read (never blocks).

        A row not read yet (or not since the last change) is asked for; ``page_loaded``
        follows. Callers that need one charge as it is now read it by id, off the GUI
        thread (the detail pane does).
        """
        entry = self._entry(row)
        return None if entry is None else entry[0]

    def row_of(self, charge_id: str) -> int | None:
        """The row of a charge among the cached rows (None if not read)."""
        for key, page in self._pages.items():
            for slot, entry in enumerate(page):
                if entry is not None and entry[0].charge_id == charge_id:
                    rank = key * PAGE_SIZE + slot
                    if rank < self._count:
                        return self._row_of_rank(rank)
        return None

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else self._count

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else _COLUMNS

    def index(
        self,
        row: int,
        column: int,
        parent: QModelIndex | QPersistentModelIndex = QModelIndex(),  # noqa: B008
    ) -> QModelIndex:
        # Qt's own index() asks rowCount() and columnCount(): two calls into Python per
        # cell painted, each a wait for the GIL while the gateway is busy. One is enough.
        if parent.isValid() or not (0 <= row < self._count and 0 <= column < _COLUMNS):
            return QModelIndex()
        return self.createIndex(row, column)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == _DISPLAY:
            return _HEADER_TEXTS[section] if 0 <= section < _COLUMNS else None
        return None

    def data(
        self,
        index: QModelIndex | QPersistentModelIndex,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        if not index.isValid():
            return None
        entry = self._entry(index.row())
        if entry is None:
            return None
        return _value(entry, index.column(), role)

    def multiData(
        self,
        index: QModelIndex | QPersistentModelIndex,
        roleDataSpan: QModelRoleDataSpan | QModelRoleData,
    ) -> None:
        """Every role the delegate paints a cell with, in one call into Python.

        Qt's default calls ``data()`` once per role: seven calls per cell painted, each
        waiting for the GIL while the gateway is busy.
        """
        # The stubs know no len()/[] on a span; PySide6 has both.
        span: Any = roleDataSpan if isinstance(roleDataSpan, QModelRoleDataSpan) else [roleDataSpan]
        entry = self._entry(index.row()) if index.isValid() else None
        column = index.column()
        for i in range(len(span)):
            role_data = span[i]
            value = None if entry is None else _value(entry, column, role_data.role())
            if value is None:
                role_data.clearData()
            else:
                role_data.setData(value)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Only time sorts (the ledger's paging order); other columns keep it."""
        if column != Column.TIME:
            return
        ascending = order == Qt.SortOrder.AscendingOrder
        if ascending == self._ascending:
            return
        self.layoutAboutToBeChanged.emit()
        self._ascending = ascending  # ranks do not change: the cached rows stay valid
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

    def multiData(
        self,
        index: QModelIndex | QPersistentModelIndex,
        roleDataSpan: QModelRoleDataSpan | QModelRoleData,
    ) -> None:
        # The C++ proxy would call the source's data() once per role (see ChargesModel).
        source = self.sourceModel()
        if isinstance(source, ChargesModel):
            source.multiData(self.mapToSource(index), roleDataSpan)
        else:
            super().multiData(index, roleDataSpan)
