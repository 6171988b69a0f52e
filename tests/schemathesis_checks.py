"""Schemathesis hooks for hostile fuzzing: who calls, what must be refused, and what must never leak.

The schemathesis command line loads this file from `SCHEMATHESIS_HOOKS` (see
`tests.fuzzing.fuzz_hostile`); it reads its configuration from the JSON file
`ANYAM_FUZZ_CONFIG` names:

- `tokens`: {kind: token or null}; every case is sent with one of them, picked
  from the case itself (so a replayed or shrunk case keeps its token), `null`
  meaning no `Authorization` header at all;
- `roles`: {kind: role}, the role each kind really has: `staff`, `auditor`,
  `collaborator:<id>` or `invalid`;
- `forbidden`: {label: value}, data no response may contain, in its body or
  its headers, in any usual encoding; `personal_data_readers`: the kinds that
  may read personal data where SPEC §10 lets them (staff, from
  `GET /residents/{resident_id}/personal-data`, and the bank file of `POST /bank-transfer-files`);
- `tally`: a file to which one line per response is appended (kind, operation,
  status; no values), so a test can tell that every kind of caller was tried.

Failure messages name the label of a leaked datum, never the datum itself:
they end up in CI logs. The logic is plain functions, so a unit test can show
the checks fail on a leaking or wrongly admitted response.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

CONFIG_ENV = "ANYAM_FUZZ_CONFIG"
PERSONAL_DATA = ("GET", "/residents/{resident_id}/personal-data")
#: The bank's transfer file: artisans' accounts and names, for staff to send to the bank (docs/money.md).
BANK_FILE = ("POST", "/bank-transfer-files")
#: Where staff read personal data, and nowhere else.
PERSONAL_DATA_READS = {PERSONAL_DATA, BANK_FILE}
#: Open to anyone, token or not (SPEC §10); an artisan's page takes no token: its link is the key.
OPEN = {("GET", "/health"), ("GET", "/saya/{secret}")}
#: Narrower than "auditors read everything": personal data is for staff alone.
STAFF_ONLY = {PERSONAL_DATA}
#: What a collaborator may do, beyond nothing.
OWN_REJECTIONS = ("GET", "/collaborators/{collaborator_id}/rejections")
SUBMIT = ("POST", "/qc-submissions")
#: The list of pieces: a collaborator's own only (the filter is forced; naming another's is refused).
OWN_PIECES = ("GET", "/pieces")
#: A web page for people, not an API: it refuses with an HTML page, and `?token=` is checked first.
DASHBOARD = ("GET", "/dashboard")
PROBLEM_CODES = {401: "unauthorized", 403: "forbidden", 405: "method-not-allowed"}


# --- what leaks -------------------------------------------------------------------------------------


def encodings(value: str) -> set[str]:
    """The forms in which `value` could appear in a body or header: as is, JSON-, URL- and HTML-escaped,
    lower-cased; for a phone number also without its country or trunk prefix."""
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], quote(value),
             quote_plus(value), quote(value, safe=""), html.escape(value)}
    if re.fullmatch(r"(\+62|62|0)8\d{7,11}", value):
        forms.add(re.sub(r"^(\+62|62|0)", "", value))
    return {form.lower() for form in forms if form}


def find_leaks(forbidden: Mapping[str, str], content: bytes, headers: Mapping[str, Iterable[str] | str]) -> list[str]:
    """The labels of the forbidden values found in a response's body or headers (never the values)."""
    text = content.decode("utf-8", "replace").lower()
    header_lines = []
    for name, values in headers.items():
        for value in [values] if isinstance(values, str) else values:
            header_lines.append(f"{name}: {value}".lower())
    haystacks = [text, *header_lines]
    found = []
    for label, value in forbidden.items():
        forms = encodings(value)
        if any(form in haystack for haystack in haystacks for form in forms):
            found.append(label)
    return sorted(found)


# --- what must be refused ---------------------------------------------------------------------------


def acceptable_refusals(role: str, method: str, path: str, path_parameters: Mapping[str, Any],
                        query: Mapping[str, Any], declared_method: str | None = None) -> set[int] | None:
    """The statuses SPEC §10 allows for `role` calling (`method`, `path`): a set of refusals, or None
    when the call is admitted (and then any 2xx-4xx the operation chooses will do). `declared_method` is
    the operation's own method, when `method` is a probe with another one."""
    operation = (method, path)
    if declared_method is not None and method != declared_method:
        # A method the path does not serve (schemathesis probes them): refused as such before any
        # token is looked at, which reveals nothing the public document does not say.
        return {405}
    if operation in OPEN:
        return None
    if operation == DASHBOARD and query.get("token") is not None:
        return {401}  # a `?token=` is checked before the header, and no fuzzed one is valid
    if role == "invalid":
        return {401}
    if role == "staff":
        return None
    if role == "auditor":
        return None if method == "GET" and operation not in STAFF_ONLY else {403}
    if role.startswith("collaborator:"):
        own = role.partition(":")[2]
        if operation == SUBMIT:
            return None
        if operation == OWN_REJECTIONS:
            asked = str(path_parameters.get("collaborator_id", "")).strip()
            # Another's feed is refused; a malformed query is refused as such first, revealing nothing.
            return None if asked == own else {403, 422}
        if operation == OWN_PIECES:
            asked = query.get("collaborator_id")
            return None if asked is None or str(asked) == own else {403, 422}
        return {403}
    raise ValueError(f"unknown role {role!r}")


def refusal_problems(status: int, acceptable: set[int], operation: tuple[str, str], content_type: str,
                     content: bytes, headers: Mapping[str, Iterable[str] | str]) -> list[str]:
    """What is wrong with a response that had to be one of the `acceptable` refusals."""
    if status not in acceptable:
        return [f"answered {status}, SPEC §10 wants {' or '.join(map(str, sorted(acceptable)))}"]
    if status == 422:
        return []
    wrong = []
    media_type = content_type.split(";")[0].strip().lower()
    if operation == DASHBOARD:
        if media_type != "text/html":
            wrong.append(f"the dashboard's refusal is {media_type or 'untyped'}, not an HTML page")
    elif media_type != "application/problem+json":
        wrong.append(f"a {status} as {media_type or 'untyped'}, not application/problem+json")
    else:
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("status") != status or body.get("code") != PROBLEM_CODES[status]:
            wrong.append(f"a {status} whose body is not a problem document with code {PROBLEM_CODES[status]!r}")
    if status == 401:
        challenge = _header(headers, "www-authenticate")
        if not challenge.lower().startswith("bearer") and operation != DASHBOARD:
            wrong.append("a 401 without `WWW-Authenticate: Bearer`")
    return wrong


def _header(headers: Mapping[str, Iterable[str] | str], name: str) -> str:
    for key, values in headers.items():
        if key.lower() == name:
            return values if isinstance(values, str) else next(iter(values), "")
    return ""


# --- the schemathesis side ----------------------------------------------------------------------


def pick(kinds: list[str], method: str, path: str, *parts: Any) -> str:
    """The kind of token a case is sent with: from the case's own content, so a replay sends the same."""
    digest = hashlib.sha256(repr((method, path, *parts)).encode("utf-8", "backslashreplace")).digest()
    return kinds[int.from_bytes(digest[:8], "big") % len(kinds)]


def install(config: Mapping[str, Any]) -> None:
    """Register the hook and the two checks with schemathesis, for the run `config` describes."""
    import schemathesis

    tokens: dict[str, str | None] = config["tokens"]
    roles: dict[str, str] = config["roles"]
    forbidden: dict[str, str] = config["forbidden"]
    readers = set(config.get("personal_data_readers", []))
    personal = {label for label in forbidden if label.startswith("personal:")}
    kinds = sorted(tokens)
    by_header = {f"Bearer {token}": kind for kind, token in tokens.items() if token is not None}
    anonymous = next((kind for kind, token in tokens.items() if token is None), None)
    tally_lock = threading.Lock()

    @schemathesis.hook
    def before_call(context, case, kwargs):  # noqa: ARG001 - the hook's signature
        headers = {name: value for name, value in (case.headers or {}).items() if name.lower() != "authorization"}
        kind = pick(kinds, case.method, case.path, case.path_parameters, case.query, headers, case.body)
        case.headers = headers
        if tokens[kind] is not None:
            case.headers["Authorization"] = f"Bearer {tokens[kind]}"

    def kind_of(response) -> str:
        header = response.request.headers.get("Authorization")
        if header is None:
            if anonymous is None:
                raise AssertionError("a request went out without a token, and none of this run's kinds is 'none'")
            return anonymous
        if header not in by_header:
            raise AssertionError("a request went out with a token this run did not give it")
        return by_header[header]

    @schemathesis.check
    def no_leaked_data(ctx, response, case):  # noqa: ARG001
        """No response carries personal data (but staff's own read of it) or another collaborator's data."""
        kind = kind_of(response)
        looked_for = dict(forbidden)
        if kind in readers and (case.method.upper(), case.path) in PERSONAL_DATA_READS:
            looked_for = {label: value for label, value in forbidden.items() if label not in personal}
        leaks = find_leaks(looked_for, response.content, response.headers)
        if leaks:
            raise AssertionError(f"the response to a {kind} token carries {', '.join(leaks)}")

    @schemathesis.check
    def refused_as_spec_says(ctx, response, case):  # noqa: ARG001
        """Tokens that may not do a thing get 401/403 problem details, and nothing more."""
        kind = kind_of(response)
        operation = (case.method.upper(), case.path)
        declared = case.operation.method.upper()
        if "tally" in config:
            line = json.dumps({"kind": kind, "method": operation[0], "path": operation[1],
                               "operation": declared, "status": response.status_code})
            with tally_lock, open(config["tally"], "a", encoding="utf-8") as tally:
                tally.write(line + "\n")
        acceptable = acceptable_refusals(roles[kind], operation[0], operation[1], case.path_parameters or {},
                                         case.query or {}, declared)
        if acceptable is None:
            return
        wrong = refusal_problems(response.status_code, acceptable, operation,
                                 _header(response.headers, "content-type"), response.content, response.headers)
        if wrong:
            raise AssertionError(f"{kind} token ({roles[kind].partition(':')[0]}): {'; '.join(wrong)}")


if os.environ.get(CONFIG_ENV):
    with open(os.environ[CONFIG_ENV], encoding="utf-8") as _file:
        install(json.load(_file))
