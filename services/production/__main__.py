"""`python -m services.production`: run the production service from `ANYAM_*` settings."""

from services.production.app import ProductionSettings, create_app
from shared.service import run_service

if __name__ == "__main__":
    settings = ProductionSettings()
    run_service(create_app(settings), settings)
