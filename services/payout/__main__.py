"""`python -m services.payout`: run the payout service from `ANYAM_*` settings."""

from services.payout.app import PayoutSettings, create_app
from shared.service import run_service

if __name__ == "__main__":
    settings = PayoutSettings()
    run_service(create_app(settings), settings)
