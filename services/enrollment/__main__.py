"""`python -m services.enrollment`: run the enrollment service from `ANYAM_*` settings."""

from services.enrollment.app import EnrollmentSettings, create_app
from shared.service import run_service

if __name__ == "__main__":
    settings = EnrollmentSettings()
    run_service(create_app(settings), settings)
