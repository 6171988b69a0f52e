"""The enrollment service's composition root: settings, vault, handlers, runtime, app — explicit."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field, SecretStr

from services.enrollment import personal_data, projections
from services.enrollment.bank_file import PayoutRuns, bank_file_router
from services.enrollment.handlers import EnrollmentHandlers
from services.enrollment.http import enrollment_router
from services.enrollment.money import PayoutLedger
from services.enrollment.personal_data import PersonalDataVault
from shared.service import ServiceRuntime, ServiceSettings, service_app
from shared.web.access import Access


class EnrollmentSettings(ServiceSettings):
    personal_data_key: SecretStr = Field(
        description="Base64 of 32 random bytes: the master key that seals every resident's own key."
    )
    payout_url: str | None = Field(
        default=None,
        description="Payout's HTTP base URL: erasure asks it what the resident is owed, and the bank file a run's "
                    "payouts (with the auditor's token). Unset, erasure needs override_money_owed=true and no "
                    "bank file can be written.",
    )


def create_app(settings: EnrollmentSettings | None = None) -> FastAPI:
    """The enrollment service, wired from `settings` (read from `ANYAM_*` when not given)."""
    settings = settings or EnrollmentSettings()
    runtime = ServiceRuntime(name="enrollment", settings=settings, schema=[personal_data.install, projections.install])
    vault = PersonalDataVault(PersonalDataVault.master_key_from_setting(settings.personal_data_key.get_secret_value()))
    handlers = EnrollmentHandlers(vault=vault)
    access = Access(settings)
    auditor_token = settings.auditor_token.get_secret_value()
    return service_app(
        runtime, title="Anyam enrollment", access=access, routers=[
            enrollment_router(runtime, handlers, access, PayoutLedger(settings.payout_url, auditor_token)),
            bank_file_router(runtime, vault, access, PayoutRuns(settings.payout_url, auditor_token)),
        ],
    )
