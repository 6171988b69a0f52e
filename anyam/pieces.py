"""`anyam pieces import FILE.csv`: a field officer's sheet of woven pieces, uploaded to `POST /piece-batches`.

The upload's `Idempotency-Key` is the file's digest unless `--key` names one: running the
command again on the same file (after a timeout, or by mistake) records nothing twice and
prints the same results. A fixed row is uploaded in a new file with only the fixed rows:
the rows of the first file were recorded, and a changed file is a new upload.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from anyam.stack import StackError, StackState, inspect_stack
from anyam.stack import stackfile as keys
from shared.money import rupiah

console = Console(highlight=False)

pieces_app = typer.Typer(help="Woven pieces: import a field officer's CSV.", no_args_is_help=True)

#: How long an upload may take to answer: the largest (2,000 rows) takes well under a minute.
UPLOAD_TIMEOUT_SECONDS = 300

WorkdirOption = Annotated[
    Path, typer.Option("--workdir", envvar="ANYAM_WORKDIR", help="The stack's work directory (its stack.env).",
                       file_okay=False),
]


def upload_key(content: bytes) -> str:
    """The upload's key when none is given: the file's digest, so the same file is the same upload."""
    return f"pieces-import-{hashlib.sha256(content).hexdigest()[:48]}"


def results_table(answer: dict[str, Any]) -> Table:
    """One line per row: its number, what became of it, and the piece and rate, or the reason."""
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("row", justify="right")
    table.add_column("result", no_wrap=True)
    table.add_column("piece, or why not", overflow="fold")
    table.add_column("rate", justify="right", no_wrap=True)
    for result in answer["results"]:
        if result["status"] == "refused":
            table.add_row(str(result["row"]), "refused", f"{result['code']}: {result['message']}", "")
        else:
            table.add_row(str(result["row"]), result["status"], result["piece_id"], rupiah(result["rate_idr"]))
    return table


def summary(answer: dict[str, Any]) -> str:
    line = (f"{answer['rows']} row(s): {answer['recorded']} recorded now, {answer['already_recorded']} recorded "
            f"before, {answer['refused']} refused.")
    if answer["refused"]:
        line += " Fix the refused rows and upload them in a new file of their own."
    return line


@pieces_app.command("import")
def import_pieces(
    file: Annotated[Path, typer.Argument(help="The CSV: a header row artisan_id,collaborator_id,product,woven_at, "
                                              "then one row per piece (docs/http.md).", dir_okay=False)],
    key: Annotated[str | None, typer.Option("--key", help="The upload's Idempotency-Key (default: the file's "
                                                          "digest).")] = None,
    workdir: WorkdirOption = keys.DEFAULT_WORKDIR,
) -> None:
    """Record the pieces of a CSV file, each row once, and print what became of each row (exit 1 if any was
    refused)."""
    try:
        content = file.read_bytes()
    except OSError as err:
        raise StackError(f"cannot read {file}: {err.strerror}") from None
    inspection = inspect_stack(workdir)
    if inspection.state is not StackState.RUNNING:
        raise StackError(f"no stack runs in {inspection.workdir}: start one with `anyam up` first")
    answer = asyncio.run(_upload(inspection.env, content, key or upload_key(content)))
    console.print(results_table(answer))
    console.print(summary(answer))
    if answer["refused"]:
        raise typer.Exit(1)


async def _upload(env: dict[str, str], content: bytes, key: str) -> dict[str, Any]:
    import httpx

    url = env.get("ANYAM_PRODUCTION_URL")
    if url is None:
        raise StackError("the stack runs no production service")
    async with httpx.AsyncClient(base_url=url, timeout=UPLOAD_TIMEOUT_SECONDS,
                                 headers={"Authorization": f"Bearer {env[keys.STAFF_TOKEN]}"}) as http:
        response = await http.post("/piece-batches", content=content, headers={
            "Content-Type": "text/csv; charset=utf-8", "Idempotency-Key": key})
    if response.status_code >= 400:
        problem = response.json() if response.headers.get("content-type", "").endswith("json") else {}
        raise StackError(f"production refused the upload ({response.status_code} {problem.get('code', '')}): "
                         f"{problem.get('detail', 'no detail')}")
    answer: dict[str, Any] = response.json()
    return answer
