"""Settings dialog: validation as you type, masking, generate, test/live mixing, round trip."""

from __future__ import annotations

from desktop_helpers import TEST_SECRETS
from PySide6.QtWidgets import QDialogButtonBox, QLineEdit

from gateway.config import ENV_SECRET_KEY, Mode, Secrets, Settings
from ursus_desktop.settings_dialog import SettingsDialog


def make(qtbot, controller, secrets: Secrets = TEST_SECRETS, ledger_mode=None) -> SettingsDialog:
    dialog = SettingsDialog(controller, secrets, Settings(), ledger_mode)
    qtbot.addWidget(dialog)
    return dialog


def save_enabled(dialog: SettingsDialog) -> bool:
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Save).isEnabled()


def test_secrets_are_masked_until_shown(qtbot, controller) -> None:
    dialog = make(qtbot, controller)
    for edit in (dialog.secret_key, dialog.webhook_secrets, dialog.api_keys):
        assert edit.echoMode() == QLineEdit.EchoMode.Password
    dialog.show_secrets.setChecked(True)
    assert dialog.secret_key.echoMode() == QLineEdit.EchoMode.Normal
    dialog.show_secrets.setChecked(False)
    assert dialog.secret_key.echoMode() == QLineEdit.EchoMode.Password


def test_validation_as_you_type(qtbot, controller) -> None:
    dialog = make(qtbot, controller)
    assert save_enabled(dialog)
    qtbot.keyClicks(dialog.account, "x")  # acct_test1234567x is fine
    assert save_enabled(dialog)
    dialog.account.setText("bogus")
    assert not save_enabled(dialog)
    assert dialog.account.property("valid") == "false"
    assert "acct_" in dialog.problem_label.text()
    dialog.account.setText(TEST_SECRETS.connected_account_id)
    dialog.secret_key.setText("pk_test_notasecretkey")
    assert not save_enabled(dialog)
    assert dialog.secret_key.property("valid") == "false"
    dialog.secret_key.setText("rk_live_restricted1234")
    assert save_enabled(dialog)
    dialog.stripe_percent.setText("2,9")
    assert not save_enabled(dialog)
    dialog.stripe_percent.setText("3.4")
    assert save_enabled(dialog)
    assert str(dialog.settings().fee_schedule.stripe_percent) == "3.4"


def test_missing_secrets_may_be_saved_but_are_listed(qtbot, controller) -> None:
    dialog = make(qtbot, controller, Secrets())
    assert save_enabled(dialog)
    assert "STRIPE_SECRET_KEY" in dialog.problem_label.text()
    assert not dialog.test_button.isEnabled()


def test_generate_adds_a_strong_api_key(qtbot, controller) -> None:
    dialog = make(qtbot, controller)
    dialog.generate_button.click()
    keys = dialog.secrets().api_keys
    assert keys[0] == TEST_SECRETS.api_keys[0]
    assert len(keys) == 2 and len(keys[1]) >= 40


def test_test_and_live_keys_cannot_be_mixed(qtbot, controller) -> None:
    dialog = make(qtbot, controller, ledger_mode=Mode.TEST)
    assert save_enabled(dialog)
    dialog.secret_key.setText("sk_live_" + "Z" * 16)
    assert not save_enabled(dialog)
    assert any(p.name == ENV_SECRET_KEY and "mix" in p.message for p in dialog.problems)
    assert "sk_live_" not in dialog.problem_label.text()  # never echo a secret


def test_saved_values_round_trip_through_the_keyring(qtbot, controller, memory_keyring) -> None:
    dialog = make(qtbot, controller, Secrets())
    dialog.secret_key.setText(TEST_SECRETS.stripe_secret_key)
    dialog.webhook_secrets.setText(",".join(TEST_SECRETS.webhook_secrets))
    dialog.account.setText(TEST_SECRETS.connected_account_id)
    dialog.generate_button.click()
    dialog.platform_name.setText("Bear Goods")
    dialog.accept()
    assert dialog.result() == SettingsDialog.DialogCode.Accepted
    with qtbot.waitSignal(controller.settings_saved, timeout=5000):
        controller.save(dialog.secrets(), dialog.settings())
    reopened = make(qtbot, controller, controller.secrets)
    assert reopened.secrets() == dialog.secrets()
    assert reopened.secret_key.text() == TEST_SECRETS.stripe_secret_key
    assert len(memory_keyring.values) == 4
    assert controller.settings.platform_name == "Bear Goods"
