"""Every advisory lock of the project has a key of its own.

Two locks sharing a key wait for each other for no reason: with the payout run's lock and
the dashboard's install lock on one key, a payout service starting during a payout run
waited for the run to commit before it could install its tables.
"""

from __future__ import annotations

from services.payout import artisan, dashboard, invoicing
from services.payout import handlers as payout_handlers
from services.payout import projections as payout_projections
from shared.eventstore import schema
from shared.web import commands

LOCKS = {
    "event store appends (and its install)": schema.APPEND_LOCK_KEY,
    "outbox relay leadership": schema.RELAY_LOCK_KEY,
    "ledger install": payout_projections.INSTALL_LOCK_KEY,
    "payout runs": payout_handlers.RUN_LOCK_KEY,
    "collaborator invoices": invoicing.INVOICE_LOCK_KEY,
    "dashboard install": dashboard.INSTALL_LOCK_KEY,
    "artisan pages install": artisan.INSTALL_LOCK_KEY,
    "idempotency install": commands.INSTALL_LOCK_KEY,
}


def test_no_two_advisory_locks_share_a_key():
    by_key: dict[int, list[str]] = {}
    for name, key in LOCKS.items():
        by_key.setdefault(key, []).append(name)
    assert {hex(key): names for key, names in by_key.items() if len(names) > 1} == {}


def test_lock_keys_fit_postgresql_bigint():
    assert all(0 < key < 2**63 for key in LOCKS.values())
