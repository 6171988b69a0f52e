"""The CloudEvents 1.0 structured-mode envelope of SPEC §5."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, SerializeAsAny, Strict, StringConstraints, model_validator

from shared.contracts.events import STORABLE_TEXT_PATTERN, EventData
from shared.ids import new_event_id
from shared.timeutil import to_wib, wib_now

CONTENT_TYPE = "application/cloudevents+json"
SPEC_VERSION: Final = "1.0"

Attribute = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=STORABLE_TEXT_PATTERN)]


class Envelope(BaseModel):
    """One event on the wire: CloudEvents context attributes around typed `data`.

    Extra top-level attributes (CloudEvents extensions) are kept, so a consumer
    that re-encodes an event it did not write loses nothing.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"] = SPEC_VERSION
    id: Attribute
    source: Attribute
    type: Attribute
    subject: Attribute | None = None
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    #: The version of `data`'s schema; left out, the version its model writes today.
    dataversion: Annotated[int, Strict()] = 0
    data: SerializeAsAny[EventData]

    @model_validator(mode="after")
    def _versioned(self) -> Envelope:
        if self.dataversion == 0:
            object.__setattr__(self, "dataversion", self.data.data_version)  # frozen: set once, here
        return self

    @classmethod
    def wrap(
        cls,
        data: EventData,
        *,
        source: str,
        time: datetime | None = None,
        subject: str | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        """A new event around `data`: a fresh UUIDv7 id, `time` in WIB (now, unless given)."""
        return cls(
            id=event_id or new_event_id(),
            source=source,
            type=data.event_type,
            subject=subject,
            time=to_wib(time) if time is not None else wib_now(),
            data=data,
        )

    @property
    def key(self) -> str:
        """The record key of SPEC §4, taken from the data field the event type names."""
        return self.data.record_key()


def service_source(service: str) -> str:
    """The `source` of events our own services write: `/services/<name>`."""
    return f"/services/{service}"


def collaborator_source(collaborator_id: str) -> str:
    """The `source` of a QC submission: `/collaborators/<collaborator_id>`."""
    return f"/collaborators/{collaborator_id}"
