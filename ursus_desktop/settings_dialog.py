"""Settings dialog: secrets (masked, keyring only) and settings (the JSON file)."""

from __future__ import annotations

import dataclasses
import secrets as pysecrets
from decimal import Decimal, InvalidOperation

from PySide6.QtCore import Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from gateway.config import (
    ACCOUNT_RE,
    ENV_ACCOUNT,
    ENV_API_KEY,
    ENV_SECRET_KEY,
    ENV_WEBHOOK_SECRET,
    SECRET_KEY_RE,
    ConfigProblem,
    FeeSourcePolicy,
    Mode,
    Secrets,
    Settings,
    secret_problems,
    settings_problems,
)
from gateway.fees import FeeSchedule
from ursus_desktop.controller import GatewayController


def generate_api_key() -> str:
    return pysecrets.token_urlsafe(32)


def mixing_problem(secret_key: str, ledger_mode: Mode | None) -> str:
    """Why this key would mix test and live money in one ledger, or ''."""
    match = SECRET_KEY_RE.match(secret_key)
    if not match or ledger_mode not in (Mode.TEST, Mode.LIVE):
        return ""
    key_mode = Mode.LIVE if match.group(2) == "live" else Mode.TEST
    if key_mode == ledger_mode:
        return ""
    return (
        f"This ledger holds {ledger_mode.upper()} payments; a {key_mode.upper()} key would mix "
        "test and live money. Use a separate data folder (URSUS_DATA_DIR) for it."
    )


class SettingsDialog(QDialog):
    """Edits a copy; ``secrets()``/``settings()`` give the result after ``accept``."""

    def __init__(
        self,
        controller: GatewayController,
        secrets: Secrets,
        settings: Settings,
        ledger_mode: Mode | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("URSUS settings")
        self.controller = controller
        self.ledger_mode = ledger_mode
        self._base = settings
        self.problems: list[ConfigProblem] = []

        # -- secrets
        self.secret_key = self._secret_edit(secrets.stripe_secret_key, "sk_test_… or sk_live_…")
        self.webhook_secrets = self._secret_edit(
            ",".join(secrets.webhook_secrets), "whsec_… (comma-separated while rotating)"
        )
        self.account = QLineEdit(secrets.connected_account_id)
        self.account.setPlaceholderText("acct_…")
        self.api_keys = self._secret_edit(",".join(secrets.api_keys), "comma-separated")
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Add a new random API key for create-payment-intent")
        self.generate_button.clicked.connect(self.on_generate_clicked)
        self.show_secrets = QCheckBox("Show secrets")
        self.show_secrets.toggled.connect(self.on_show_secrets_toggled)
        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(self.on_test_clicked)
        self.test_result = QLabel()
        self.test_result.setWordWrap(True)
        controller.connection_tested.connect(self.on_connection_tested)

        api_row = QHBoxLayout()
        api_row.addWidget(self.api_keys, 1)
        api_row.addWidget(self.generate_button)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.test_result, 1)

        secret_box = QGroupBox("Stripe and API keys (stored in the system keyring)")
        form = QFormLayout(secret_box)
        form.addRow("Stripe secret key", self.secret_key)
        form.addRow("Webhook signing secret(s)", self.webhook_secrets)
        form.addRow("Connected account id", self.account)
        form.addRow("API key(s)", api_row)
        form.addRow("", self.show_secrets)
        form.addRow("", test_row)

        # -- settings
        self.platform_name = QLineEdit(settings.platform_name)
        self.connected_name = QLineEdit(settings.connected_name)
        self.host = QLineEdit(settings.host)
        self.port = QSpinBox()
        self.port.setRange(0, 65535)
        self.port.setValue(settings.port)
        self.public_url = QLineEdit(settings.public_url)
        self.public_url.setPlaceholderText("https://… (your tunnel), optional")
        schedule = settings.fee_schedule
        self.stripe_percent = QLineEdit(str(schedule.stripe_percent))
        self.fixed_fee = QSpinBox()
        self.fixed_fee.setRange(0, 100000)
        self.fixed_fee.setValue(schedule.fixed_fee)
        self.fixed_fee.setSuffix(" minor units")
        self.platform_percent = QLineEdit(str(schedule.platform_percent))
        self.fee_source = QComboBox()
        for policy in FeeSourcePolicy:
            self.fee_source.addItem(
                "actual (wait for Stripe's fee)"
                if policy is FeeSourcePolicy.ACTUAL
                else "estimate (use the rates)",
                str(policy),
            )
        self.fee_source.setCurrentIndex(self.fee_source.findData(str(settings.fee_source)))

        settings_box = QGroupBox("Gateway")
        sform = QFormLayout(settings_box)
        sform.addRow("Platform name", self.platform_name)
        sform.addRow("Vendor name", self.connected_name)
        sform.addRow("Bind address", self.host)
        sform.addRow("Port", self.port)
        sform.addRow("Public URL", self.public_url)
        fee_box = QGroupBox("Fees")
        fform = QFormLayout(fee_box)
        fform.addRow("Stripe percent", self.stripe_percent)
        fform.addRow("Stripe fixed fee", self.fixed_fee)
        fform.addRow("Platform commission percent", self.platform_percent)
        fform.addRow("Fee source", self.fee_source)

        self.problem_label = QLabel()
        self.problem_label.setObjectName("problemLabel")
        self.problem_label.setWordWrap(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.addWidget(secret_box)
        body_layout.addWidget(settings_box)
        body_layout.addWidget(fee_box)
        scroll = QScrollArea()  # small screens: the form scrolls, the buttons stay
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        layout = QVBoxLayout(self)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.problem_label)
        layout.addWidget(self.buttons)

        for edit in (
            self.secret_key,
            self.webhook_secrets,
            self.account,
            self.api_keys,
            self.stripe_percent,
            self.platform_percent,
            self.host,
        ):
            edit.textChanged.connect(self.on_field_changed)
        self.port.valueChanged.connect(self.on_field_changed)
        self.fixed_fee.valueChanged.connect(self.on_field_changed)
        self.validate()

    @staticmethod
    def _secret_edit(value: str, placeholder: str) -> QLineEdit:
        edit = QLineEdit(value)
        edit.setEchoMode(QLineEdit.EchoMode.Password)
        edit.setPlaceholderText(placeholder)
        return edit

    # -- results ------------

    def secrets(self) -> Secrets:
        return Secrets.from_mapping(
            {
                ENV_SECRET_KEY: self.secret_key.text(),
                ENV_WEBHOOK_SECRET: self.webhook_secrets.text(),
                ENV_ACCOUNT: self.account.text(),
                ENV_API_KEY: self.api_keys.text(),
            }
        )

    def _decimal(self, edit: QLineEdit) -> Decimal | None:
        try:
            return Decimal(edit.text().strip())
        except InvalidOperation:
            return None

    def settings(self) -> Settings:
        """The edited settings; fields that do not parse keep their old value."""
        base = self._base
        schedule = base.fee_schedule
        stripe_percent = self._decimal(self.stripe_percent)
        platform_percent = self._decimal(self.platform_percent)
        return dataclasses.replace(
            base,
            platform_name=self.platform_name.text().strip() or base.platform_name,
            connected_name=self.connected_name.text().strip() or base.connected_name,
            host=self.host.text().strip() or base.host,
            port=self.port.value(),
            public_url=self.public_url.text().strip(),
            fee_schedule=FeeSchedule(
                stripe_percent=stripe_percent
                if stripe_percent is not None
                else schedule.stripe_percent,
                fixed_fee=self.fixed_fee.value(),
                platform_percent=platform_percent
                if platform_percent is not None
                else schedule.platform_percent,
                fixed_fee_by_currency=schedule.fixed_fee_by_currency,
            ),
            fee_source=FeeSourcePolicy(self.fee_source.currentData()),
        )

    # -- validation ------------

    def validate(self) -> list[ConfigProblem]:
        """Mark bad fields, list the problems, enable Save only when nothing is malformed."""
        secrets = self.secrets()
        problems = [p for p in secret_problems(secrets) if p.message != "missing"]
        for edit, name in (
            (self.stripe_percent, "stripe_percent"),
            (self.platform_percent, "platform_percent"),
        ):
            if self._decimal(edit) is None:
                problems.append(ConfigProblem(name, "must be a number"))
        if not self.host.text().strip():
            problems.append(ConfigProblem("host", "missing"))
        problems += settings_problems(self.settings())
        mixing = mixing_problem(secrets.stripe_secret_key, self.ledger_mode)
        if mixing:
            problems.append(ConfigProblem(ENV_SECRET_KEY, mixing))
        self.problems = problems
        bad = {p.name for p in problems}
        for edit, name in (
            (self.secret_key, ENV_SECRET_KEY),
            (self.webhook_secrets, ENV_WEBHOOK_SECRET),
            (self.account, ENV_ACCOUNT),
            (self.api_keys, ENV_API_KEY),
            (self.stripe_percent, "stripe_percent"),
            (self.platform_percent, "platform_percent"),
            (self.host, "host"),
        ):
            edit.setProperty("valid", "false" if name in bad else "true")
            edit.style().unpolish(edit)
            edit.style().polish(edit)
        missing = [p.name for p in secret_problems(secrets) if p.message == "missing"]
        lines = [str(p) for p in problems]
        if missing and not problems:
            lines.append(
                "Not set yet (the gateway will not start without them): " + ", ".join(missing)
            )
        self.problem_label.setText("\n".join(lines))
        self.buttons.button(QDialogButtonBox.StandardButton.Save).setEnabled(not problems)
        self.test_button.setEnabled(
            bool(SECRET_KEY_RE.match(secrets.stripe_secret_key))
            and bool(ACCOUNT_RE.match(secrets.connected_account_id))
        )
        return problems

    # -- slots ------------

    @Slot()
    @Slot(str)
    @Slot(int)
    def on_field_changed(self, _value: object = None) -> None:
        self.validate()

    @Slot()
    def on_generate_clicked(self) -> None:
        keys = [k for k in self.api_keys.text().split(",") if k.strip()]
        keys.append(generate_api_key())
        self.api_keys.setText(",".join(keys))

    @Slot(bool)
    def on_show_secrets_toggled(self, shown: bool) -> None:
        mode = QLineEdit.EchoMode.Normal if shown else QLineEdit.EchoMode.Password
        for edit in (self.secret_key, self.webhook_secrets, self.api_keys):
            edit.setEchoMode(mode)

    @Slot()
    def on_test_clicked(self) -> None:
        secrets = self.secrets()
        self.test_button.setEnabled(False)
        self.test_result.setText("Testing…")
        self.controller.test_connection(
            secrets.stripe_secret_key, secrets.connected_account_id, self._base.stripe_api_base
        )

    @Slot(bool, str)
    def on_connection_tested(self, ok: bool, message: str) -> None:
        self.test_button.setEnabled(True)
        self.test_result.setText(("✔ " if ok else "✘ ") + message)

    def accept(self) -> None:
        if self.validate():
            return
        super().accept()
