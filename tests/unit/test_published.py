"""The OpenAPI and AsyncAPI documents: checked in, current, valid, and saying what the wire really carries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.exceptions import RequestValidationError
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from anyam.published import DOCS, REGENERATE, SERVICES, documents, stale
from shared.contracts import CONTENT_TYPE, EVENT_TYPES, Envelope, Topic, encode
from shared.contracts.events import QcSubmitted, TrainingCompleted
from shared.contracts.provenance import Attester, new_service_keys
from shared.eventstore import deadletters
from shared.web.access import Access, AccessSettings
from shared.web.asyncapi import event_types_on
from shared.web.limits import BodyTooLarge
from shared.web.problems import Problem, _validation_problem
from tests.asyncapi_records import record_problems
from tests.node_tools import node_tools, run

OPENAPI = {service: json.loads((DOCS / "openapi" / f"{service}.json").read_text()) for service in SERVICES}
ASYNCAPI = {service: json.loads((DOCS / "asyncapi" / f"{service}.json").read_text()) for service in SERVICES}


def test_the_checked_in_documents_are_what_the_services_serve():
    found = stale()
    assert not found, f"stale published documents: {', '.join(found)}; regenerate them with `{REGENERATE}`"


def test_the_served_documents_are_the_checked_in_ones():
    # What `/openapi.json` and `/asyncapi.json` answer is built by the same code (`app.openapi()`,
    # `service_asyncapi`), so the check above covers them; here, that the list is complete.
    assert {str(path) for path in documents()} == {f"{kind}/{service}.json" for kind in ("openapi", "asyncapi")
                                                    for service in SERVICES}


# --- OpenAPI -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_each_openapi_document_is_valid_openapi_3_1(service):
    assert OPENAPI[service]["openapi"].startswith("3.1")
    validate(OPENAPI[service])


def operations(service: str):
    for path, methods in OPENAPI[service]["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_but_health_and_the_artisan_page_wants_a_bearer_token_and_documents_its_refusal(service):
    scheme = OPENAPI[service]["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, operation in operations(service):
        # An artisan's page (docs/artisans.md) takes no token: its link is the key.
        if (method, path) in (("GET", "/health"), ("GET", "/saya/{secret}")):
            assert "security" not in operation and "401" not in operation["responses"]
            continue
        assert operation.get("security") == [{"bearer": []}], (method, path)
        assert {"401", "403"} <= operation["responses"].keys(), (method, path)


@pytest.mark.parametrize("service", SERVICES)
def test_no_operation_documents_fastapis_validation_error(service):
    text = json.dumps(OPENAPI[service])
    assert "HTTPValidationError" not in text and "ValidationError" not in OPENAPI[service]["components"]["schemas"]
    for method, path, operation in operations(service):
        if "422" in operation["responses"]:
            assert operation["responses"]["422"]["content"] == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}, (method, path)


def problem_validator(service: str) -> Draft202012Validator:
    document = OPENAPI[service]
    return Draft202012Validator({"$ref": "#/components/schemas/Problem", "components": document["components"]})


def refusals_we_send() -> list[dict]:
    access = Access(AccessSettings(staff_token="s", auditor_token="a", token_secret="t"))
    try:
        access.authenticate("Bearer nonsense")
    except Problem as unauthorized:
        refused = unauthorized
    invalid = _validation_problem(RequestValidationError([
        {"loc": ("body", "capacity"), "msg": "Input should be greater than 0", "type": "greater_than"},
        {"loc": ("query", "limit"), "msg": "Input should be a valid integer", "type": "int_parsing"},
    ]).errors())
    return [refused.body(), invalid.body(), Problem(413, "body-too-large", BodyTooLarge(1024).detail).body(),
            Problem(503, "database-unavailable", "The database is unavailable.").body(),
            Problem(429, "too-many-rejections", "Wait.").body()]


@pytest.mark.parametrize("service", SERVICES)
def test_the_problem_schema_is_the_body_our_handlers_send(service):
    validator = problem_validator(service)
    for body in refusals_we_send():
        assert not list(validator.iter_errors(body)), body
    schema = OPENAPI[service]["components"]["schemas"]["Problem"]
    assert set(schema["required"]) == {"type", "title", "status", "detail", "code"}
    assert list(validator.iter_errors({"title": "Not found", "status": 404}))  # `code` and the rest are required


# --- AsyncAPI ------------------------------------------------------------------------------------------------


def channel_messages(service: str) -> dict[str, set[str]]:
    return {channel: set(body["messages"]) for channel, body in ASYNCAPI[service]["channels"].items()}


def test_each_service_declares_per_channel_exactly_the_types_it_writes_or_reads_there():
    enrollment, production, payout = (set(event_types_on(topic)) for topic in
                                      (Topic.ENROLLMENT, Topic.PRODUCTION, Topic.PAYOUT))
    assert channel_messages("enrollment") == {"enrollment": enrollment}
    assert channel_messages("production") == {
        "enrollment": enrollment, "qc-submissions": {"qc-submitted"}, "production": production,
        "dead-letters": {"dead-letter"}}
    assert channel_messages("payout") == {
        "enrollment": enrollment, "production": production, "payout": payout, "dead-letters": {"dead-letter"}}
    assert {"resident-registered", "piece-woven", "qc-passed", "paid"} <= enrollment | production | payout
    assert set(ASYNCAPI["production"]["operations"]) == {
        "send-production", "send-dead-letters", "receive-enrollment", "receive-qc-submissions"}
    assert set(ASYNCAPI["payout"]["operations"]) == {
        "send-payout", "send-dead-letters", "receive-enrollment", "receive-production", "receive-payout"}
    assert set(ASYNCAPI["enrollment"]["operations"]) == {"send-enrollment"}


@pytest.mark.parametrize("service", SERVICES)
def test_messages_are_cloudevents_with_no_header_that_no_record_carries(service):
    document = ASYNCAPI[service]
    assert document["defaultContentType"] == CONTENT_TYPE == "application/cloudevents+json"
    assert "correlation_id" not in json.dumps(document)
    for message_id, message in document["components"]["messages"].items():
        if message_id in EVENT_TYPES:
            assert message["contentType"] == CONTENT_TYPE


def test_the_dead_letter_headers_are_the_ones_the_publisher_writes():
    headers = ASYNCAPI["production"]["components"]["schemas"]["DeadLetterHeaders"]
    ours = {value for name, value in vars(deadletters).items() if name.endswith("_HEADER")}
    assert len(ours) == 7 and set(headers["required"]) == ours
    assert ours <= headers["properties"].keys()
    assert headers == ASYNCAPI["payout"]["components"]["schemas"]["DeadLetterHeaders"]


def relayed(service: str, event) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A record as `service`'s outbox relay sends it: the encoded event, its content type and attestation."""
    record = encode(Envelope.wrap(event, source=f"/services/{service}"))
    return record.value, [*record.headers, *Attester(new_service_keys()[service]).headers(record.value)]


def test_a_record_as_the_relay_sends_it_fits_the_document_and_a_wrong_one_does_not():
    completed = TrainingCompleted(resident_id="res_1", cohort_id="coh_1", completed_on="2024-02-29")
    value, headers = relayed("enrollment", completed)
    assert record_problems(ASYNCAPI["enrollment"], "enrollment", value, headers) == []
    assert record_problems(ASYNCAPI["production"], "enrollment", value, headers) == []  # as its reader reads it
    assert "header 'correlation_id' is not declared" in record_problems(
        ASYNCAPI["enrollment"], "enrollment", value, [*headers, ("correlation_id", b"x")])
    assert record_problems(ASYNCAPI["enrollment"], "enrollment", value, headers[:1]) != []  # unattested
    wrong = json.loads(value) | {"type": "qc-submitted"}
    assert record_problems(ASYNCAPI["enrollment"], "enrollment", json.dumps(wrong).encode(), headers) == [
        "type 'qc-submitted' is not a message of channel enrollment"]
    untyped = json.loads(value)
    del untyped["data"]["cohort_id"]
    assert any("cohort_id" in problem for problem in
               record_problems(ASYNCAPI["enrollment"], "enrollment", json.dumps(untyped).encode(), headers))


def test_a_dead_letter_fits_the_dead_letters_channel_with_its_reasons():
    value, headers = relayed("enrollment", TrainingCompleted(resident_id="r", cohort_id="c", completed_on="2024-02-29"))
    dead = [*headers, *((name, b"-1" if "partition" in name or "offset" in name else b"x")
                        for name in sorted({v for n, v in vars(deadletters).items() if n.endswith("_HEADER")}))]
    assert record_problems(ASYNCAPI["payout"], "dead-letters", b"\xff not even JSON", dead) == []
    assert record_problems(ASYNCAPI["payout"], "dead-letters", value, headers) != []  # no reason given


def test_a_submission_as_a_collaborator_sends_it_fits_productions_qc_channel():
    submission = QcSubmitted(submission_id="sub_1", piece_id="pc_1", collaborator_id="col_1", result="passed",
                             inspector="QC-1", inspected_at="2024-03-04T10:00:00+07:00", defects=[],
                             signature="A" * 86 + "==")
    record = encode(Envelope.wrap(submission, source="/collaborators/col_1"))
    assert record_problems(ASYNCAPI["production"], "qc-submissions", record.value, list(record.headers)) == []
    assert record_problems(ASYNCAPI["payout"], "qc-submissions", record.value, list(record.headers)) == [
        "Anyam payout declares no channel qc-submissions"]


def test_the_asyncapi_initiatives_parser_finds_no_error_in_any_document(tmp_path):
    node = node_tools("test_published.py validates the AsyncAPI documents with @asyncapi/parser.")
    paths = [str(DOCS / "asyncapi" / f"{service}.json") for service in SERVICES]
    done = run(["node", str(node / "parse-asyncapi.mjs"), *paths], timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert [report["errors"] for report in reports] == [[], [], []] and all(r["parsed"] for r in reports)

    # The same check fails a document that is wrong: an operation sending a message its channel does not carry.
    broken = json.loads(Path(paths[0]).read_text())
    broken["operations"]["send-enrollment"]["messages"].append({"$ref": "#/channels/enrollment/messages/paid"})
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    done = run(["node", str(node / "parse-asyncapi.mjs"), str(tmp_path / "broken.json")], timeout=120)
    assert done.returncode == 1 and json.loads(done.stdout)["errors"], done.stdout + done.stderr
