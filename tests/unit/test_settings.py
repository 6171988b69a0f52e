"""`KafkaSettings` from `ANYAM_*` variables, and topic names under a prefix."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from shared.contracts.topics import ALL_TOPICS, EVENT_TOPICS, Topic, base_topic, topic_name
from shared.settings import KafkaSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Only what a test sets counts, not the caller's shell (or a loaded stack.env)."""
    import os

    for key in list(os.environ):
        if key.startswith("ANYAM_"):
            monkeypatch.delenv(key)
    return monkeypatch


def write_ca(directory: Path, common_name: str = "Anyam Test CA") -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_scram_from_the_environment_reaches_the_client_options(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path, mechanism: str
) -> None:
    ca = write_ca(tmp_path)
    env = clean_environment
    env.setenv("ANYAM_KAFKA_BOOTSTRAP", "kafka-1.example:9093, tcp://kafka-2.example:9093")
    env.setenv("ANYAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    env.setenv("ANYAM_KAFKA_SASL_MECHANISM", mechanism)
    env.setenv("ANYAM_KAFKA_SASL_USERNAME", "collaborator-7")
    env.setenv("ANYAM_KAFKA_SASL_PASSWORD", "s3cret-pa55")
    env.setenv("ANYAM_KAFKA_SSL_CAFILE", str(ca))

    settings = KafkaSettings()
    options = settings.client_options()

    assert options["bootstrap_servers"] == "kafka-1.example:9093,kafka-2.example:9093"
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == mechanism
    assert options["sasl_plain_username"] == "collaborator-7"
    assert options["sasl_plain_password"] == "s3cret-pa55"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    subjects = [dict(pair[0] for pair in cert["subject"]) for cert in context.get_ca_certs()]
    assert {"commonName": "Anyam Test CA"} in subjects
    # The password is a secret: it must not leak through the settings' repr (e.g. into logs).
    assert "s3cret-pa55" not in repr(settings)

    producer = settings.producer_options()
    assert producer["acks"] == "all" and producer["enable_idempotence"] is True
    assert producer["sasl_plain_password"] == "s3cret-pa55"


def test_sasl_without_a_mechanism_defaults_to_scram_sha_512(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("ANYAM_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    clean_environment.setenv("ANYAM_KAFKA_SASL_USERNAME", "u")
    clean_environment.setenv("ANYAM_KAFKA_SASL_PASSWORD", "p")
    options = KafkaSettings().client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "ssl_context" not in options


def test_ssl_without_sasl_has_a_context_and_no_credentials(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("ANYAM_KAFKA_SECURITY_PROTOCOL", "SSL")
    options = KafkaSettings().client_options()
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert not any(key.startswith("sasl_") for key in options)


def test_the_default_is_plaintext_on_localhost() -> None:
    options = KafkaSettings().client_options()
    assert options == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT",
                       "metadata_max_age_ms": 10_000}


def test_every_client_refreshes_leadership_far_sooner_than_aiokafkas_five_minutes(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    # A consumer whose offset lookup a former leader refuses reads nothing until the next refresh.
    clean_environment.setenv("ANYAM_KAFKA_METADATA_MAX_AGE_MS", "30000")
    assert KafkaSettings().producer_options()["metadata_max_age_ms"] == 30_000
    clean_environment.setenv("ANYAM_KAFKA_METADATA_MAX_AGE_MS", "600000")
    with pytest.raises(ValidationError):
        KafkaSettings()


def test_an_unknown_security_protocol_is_refused(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("ANYAM_KAFKA_SECURITY_PROTOCOL", "SASL_TLS")
    with pytest.raises(ValidationError):
        KafkaSettings()


def test_producers_are_idempotent_on_apache_kafka_and_not_on_tansu(clean_environment: pytest.MonkeyPatch) -> None:
    assert KafkaSettings().producer_options()["enable_idempotence"] is True
    clean_environment.setenv("ANYAM_KAFKA_ENGINE", "tansu")
    assert KafkaSettings().producer_options()["enable_idempotence"] is False  # tansu refuses InitProducerId
    clean_environment.setenv("ANYAM_KAFKA_IDEMPOTENT_PRODUCER", "true")
    assert KafkaSettings().producer_options()["enable_idempotence"] is True


def test_the_fetch_wait_follows_the_engine_unless_set(clean_environment: pytest.MonkeyPatch) -> None:
    # Apache Kafka answers a fetch when records arrive; tansu only when the wait is over.
    assert KafkaSettings().fetch_max_wait_ms == 500
    clean_environment.setenv("ANYAM_KAFKA_ENGINE", "tansu")
    assert KafkaSettings().fetch_max_wait_ms == 20
    clean_environment.setenv("ANYAM_KAFKA_FETCH_MAX_WAIT_MS", "75")
    assert KafkaSettings().fetch_max_wait_ms == 75


def test_topic_names_without_a_prefix_are_the_spec_names() -> None:
    assert [topic_name(t) for t in ALL_TOPICS] == [
        "enrollment",
        "production",
        "qc-submissions",
        "payout",
        "dead-letters",
    ]
    assert set(EVENT_TOPICS) == set(ALL_TOPICS) - {Topic.DEAD_LETTERS}


def test_the_prefix_from_the_environment_prefixes_every_topic(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("ANYAM_TOPIC_PREFIX", "jakarta.staging.")
    prefix = KafkaSettings().topic_prefix
    assert topic_name(Topic.QC_SUBMISSIONS, prefix) == "jakarta.staging.qc-submissions"
    assert topic_name("payout", prefix) == "jakarta.staging.payout"
    for topic in ALL_TOPICS:
        assert base_topic(topic_name(topic, prefix), prefix) is topic


def test_names_that_are_not_ours_are_refused() -> None:
    with pytest.raises(ValueError):
        topic_name("payments")
    with pytest.raises(ValueError):
        base_topic("other.payout", "jakarta.")
    with pytest.raises(ValueError):
        base_topic("jakarta.payments", "jakarta.")
