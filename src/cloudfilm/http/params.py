"""Values from requests, kept to what the index can store.

Row ids are INTEGER columns (32-bit in PostgreSQL, 64-bit in SQLite) and counts such as a
search's OFFSET are 64-bit. A larger number from a URL or a form, handed on to a query, fails
inside the database driver (a 500; an audit record carrying it loses the whole batch it is
written with) instead of matching nothing. Parse request integers with :func:`id_int`, or
declare path parameters as :data:`RowPk`, so that such a number is bad input (a 4xx) or, where
it only narrows a search, matches nothing.

No text column takes a NUL character (PostgreSQL refuses it outright), and none of our URLs
means one: :class:`NoNulInUrls` answers any URL holding one with a 400 problem, before any
endpoint hands it to a query.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from starlette.types import ASGIApp, Receive, Scope, Send

from cloudfilm.http.problems import problem_response

ROW_ID_MIN, ROW_ID_MAX = -(2**31), 2**31 - 1
"""What every engine stores in an INTEGER column (row ids, hospital ids)."""
INDEX_INT_MAX = 2**63 - 1
"""What every engine counts to (OFFSET, LIMIT, BIGINT columns)."""


def id_int(text: str | None) -> int | None:
    """``text`` as an integer an INTEGER column can hold; None when it is not one."""
    if text is None:
        return None
    try:
        number = int(text)
    except ValueError:
        return None
    return number if ROW_ID_MIN <= number <= ROW_ID_MAX else None


RowPk = Annotated[int, Path(ge=1, le=ROW_ID_MAX, description="row id")]
"""A row's primary key in a URL: anything else is a 422, never a database error."""


class NoNulInUrls:
    """ASGI middleware: a NUL in the path or the query string is bad input, for every route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b"")
        ):
            response = problem_response(400, "the URL holds a NUL character (%00)")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
