"""The programme dashboard (`GET /dashboard`): its read model (`projection`), its queries (`queries`),
its door (`http`) and its page (`view`), each importing only those before it.

The read model lives in the payout database and is fed by its own transactional
consumer (`payout-dashboard`) on `enrollment`, `production` and `payout`. Its
rows commit with the consumer's offsets and event ids, so each event counts
once; every write below is also an idempotent upsert, so even a replay into a
fresh database gives the same tables.

It keeps counts, never money: what artisans earned, were paid and are owed is
read from the ledger (`projections.balances`) in the same snapshot, so the
dashboard can never disagree with `/ledger/balances`. Payout runs are the
exception the ledger cannot answer (it does not know runs), and they come from
the payout events themselves.

Residents appear by their opaque id only: no event carries personal data, and
neither does this page.
"""

from services.payout.dashboard.http import dashboard_router
from services.payout.dashboard.projection import (
    DASHBOARD_HANDLER,
    DASHBOARD_TOPICS,
    INSTALL_LOCK_KEY,
    dashboard_consumer,
    install,
    project,
    project_batch,
)
from services.payout.dashboard.queries import Dashboard, read_dashboard

__all__ = [
    "DASHBOARD_HANDLER", "DASHBOARD_TOPICS", "INSTALL_LOCK_KEY", "Dashboard", "dashboard_consumer",
    "dashboard_router", "install", "project", "project_batch", "read_dashboard",
]
