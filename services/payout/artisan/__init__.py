"""An artisan's own page (`GET /saya/{secret}`) and the links that open it: its read model
(`projection`), the links themselves (`links`), its queries (`queries`), its page (`view`) and its
doors (`http`), each importing only those before it. See docs/artisans.md.

The read model lives in the payout database, fed by its own transactional consumer
(`payout-artisan-pages`) on `enrollment`, `production` and `payout`; her money is read from the
ledger. No personal data is known here or shown: she is greeted by her page and her opaque id.
"""

import asyncpg

from services.payout.artisan import links
from services.payout.artisan.http import PAGE_PREFIX, artisan_router
from services.payout.artisan.projection import (
    ARTISAN_HANDLER,
    ARTISAN_TOPICS,
    INSTALL_LOCK_KEY,
    artisan_consumer,
    project,
    project_batch,
)
from services.payout.artisan.projection import install as install_read_model
from services.payout.artisan.queries import ArtisanPage, read_page


async def install(pool: asyncpg.Pool) -> None:
    """The service's schema installer for the read model and the links."""
    await install_read_model(pool)
    await links.install(pool)


__all__ = [
    "ARTISAN_HANDLER", "ARTISAN_TOPICS", "INSTALL_LOCK_KEY", "PAGE_PREFIX", "ArtisanPage", "artisan_consumer",
    "artisan_router", "install", "project", "project_batch", "read_page",
]
