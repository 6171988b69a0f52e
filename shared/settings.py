"""Settings every Anyam process reads from `ANYAM_*` environment variables.

The same code runs against the embedded stack and a production Kafka cluster
and PostgreSQL; only these settings differ.
"""

from __future__ import annotations

import ssl
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster (`ANYAM_KAFKA_*`, `ANYAM_TOPIC_PREFIX`)."""

    model_config = SettingsConfigDict(env_prefix="ANYAM_", extra="ignore")

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list of the Kafka bootstrap servers.",
    )
    topic_prefix: str = Field(default="", description="Common prefix of every topic name.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = Field(default=None, description="CA bundle that signed the brokers' certificates.")
    kafka_engine: Literal["kafka", "tansu"] = Field(
        default="kafka",
        description=(
            "Which broker implementation serves the bootstrap servers: Apache Kafka (or a compatible "
            "cluster), or the embedded tansu broker, whose known defects Anyam then works around."
        ),
    )
    kafka_idempotent_producer: bool | None = Field(
        default=None,
        description=(
            "Whether producers are idempotent (a retried send is never written twice). Default: on "
            "for Apache Kafka, off for tansu, which refuses it."
        ),
    )
    kafka_fetch_max_wait_ms: int | None = Field(
        default=None, ge=1, le=30_000,
        description=(
            "How long a consumer's fetch may wait at the broker for records to arrive. Apache Kafka "
            "answers as soon as records arrive, so there it only paces idle polling (default 500, "
            "Kafka's own); tansu answers only when the wait is over, so there every consumer hop adds "
            "up to this much latency (default 20)."
        ),
    )
    kafka_metadata_max_age_ms: int = Field(
        default=10_000, ge=1_000, le=300_000,
        description=(
            "How often every client refreshes its view of which node leads each partition, whatever "
            "happens. aiokafka does not refresh it when a consumer's offset lookup is refused by a node "
            "that no longer leads (after a node hung and came back), so until the next refresh that "
            "consumer reads nothing; aiokafka's own default is five minutes."
        ),
    )

    @property
    def on_tansu(self) -> bool:
        """Whether the broker is the embedded tansu, with its defects to work around."""
        return self.kafka_engine == "tansu"

    @property
    def fetch_max_wait_ms(self) -> int:
        """The consumers' fetch wait: the setting, else the engine's default."""
        if self.kafka_fetch_max_wait_ms is not None:
            return self.kafka_fetch_max_wait_ms
        return 20 if self.on_tansu else 500

    @property
    def idempotent_producer(self) -> bool:
        """Whether producers are idempotent: the setting, else on wherever the broker supports it."""
        if self.kafka_idempotent_producer is not None:
            return self.kafka_idempotent_producer
        return not self.on_tansu

    @property
    def bootstrap_servers(self) -> str:
        """The bootstrap list in the form aiokafka takes (tansu's `tcp://` scheme stripped)."""
        return ",".join(s.strip().removeprefix("tcp://") for s in self.kafka_bootstrap.split(",") if s.strip())

    def client_options(self) -> dict[str, Any]:
        """Connection options common to aiokafka producers, consumers and admin clients."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
            "metadata_max_age_ms": self.kafka_metadata_max_age_ms,
        }
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = ssl.create_default_context(cafile=self.kafka_ssl_cafile)
        if self.kafka_security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.kafka_sasl_mechanism or "SCRAM-SHA-512"
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        return options

    def document_for_a_child(self) -> dict[str, Any]:
        """These settings as JSON for a child process, secrets revealed: for its stdin, never a command line."""
        document = self.model_dump(mode="json")
        if self.kafka_sasl_password is not None:
            document["kafka_sasl_password"] = self.kafka_sasl_password.get_secret_value()
        return document

    def producer_options(self) -> dict[str, Any]:
        """Options for every producer: nothing counts as published until all in-sync replicas have it."""
        return {**self.client_options(), "acks": "all", "enable_idempotence": self.idempotent_producer}
