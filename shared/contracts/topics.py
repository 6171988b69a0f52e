"""Topic names of SPEC §4, with the configurable common prefix."""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    """The base names of Anyam's topics; `topic_name` adds the deployment's prefix."""

    ENROLLMENT = "enrollment"
    PRODUCTION = "production"
    QC_SUBMISSIONS = "qc-submissions"
    PAYOUT = "payout"
    DEAD_LETTERS = "dead-letters"


#: The four event topics: retention unlimited, because the log is the audit trail.
EVENT_TOPICS: tuple[Topic, ...] = (Topic.ENROLLMENT, Topic.PRODUCTION, Topic.QC_SUBMISSIONS, Topic.PAYOUT)
ALL_TOPICS: tuple[Topic, ...] = (*EVENT_TOPICS, Topic.DEAD_LETTERS)


def topic_name(topic: Topic | str, prefix: str = "") -> str:
    """The full topic name for `topic` under the deployment's common `prefix`."""
    return f"{prefix}{Topic(topic).value}"


def base_topic(name: str, prefix: str = "") -> Topic:
    """The inverse of `topic_name`: which of our topics a full name refers to.

    Raises `ValueError` for a name that is not one of ours.
    """
    if prefix and not name.startswith(prefix):
        raise ValueError(f"topic {name!r} does not carry the prefix {prefix!r}")
    return Topic(name[len(prefix):])
