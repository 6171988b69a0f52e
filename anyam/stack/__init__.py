"""The embedded stack: Apache Kafka (or tansu), PostgreSQL, and the services.

`anyam up` and the test harness both build on these parts; everything else
reads the addresses from `ANYAM_*` settings and never knows the stack is embedded.
"""

from anyam.stack.broker import EmbeddedBroker, broker_answers
from anyam.stack.errors import (
    BrokerBinaryMissing,
    BrokerNotReady,
    NoStack,
    PortInUse,
    PostgresFailed,
    StackAlreadyRunning,
    StackError,
    TopicProvisioningFailed,
)
from anyam.stack.lifecycle import (
    RunningStack,
    StackInspection,
    StackState,
    StackStatus,
    clean_leftovers,
    default_engine,
    inspect_stack,
    stack_status,
    start_stack,
    stop_stack,
    wait_for_shutdown,
)
from anyam.stack.postgres import EmbeddedPostgres, create_database, database_url, stop_postgres
from anyam.stack.provisioning import ensure_topics
from anyam.stack.services import SERVICES, LaunchedService, ServiceSpec, service_environment
from anyam.stack.stackfile import DEFAULT_WORKDIR, read_stack_env, stack_file, write_stack_env

__all__ = [
    "DEFAULT_WORKDIR",
    "SERVICES",
    "BrokerBinaryMissing",
    "BrokerNotReady",
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "LaunchedService",
    "NoStack",
    "PortInUse",
    "PostgresFailed",
    "RunningStack",
    "ServiceSpec",
    "StackAlreadyRunning",
    "StackError",
    "StackInspection",
    "StackState",
    "StackStatus",
    "TopicProvisioningFailed",
    "broker_answers",
    "clean_leftovers",
    "default_engine",
    "create_database",
    "database_url",
    "ensure_topics",
    "inspect_stack",
    "read_stack_env",
    "service_environment",
    "stack_file",
    "stack_status",
    "start_stack",
    "stop_postgres",
    "stop_stack",
    "wait_for_shutdown",
    "write_stack_env",
]
