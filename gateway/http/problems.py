"""Every error answer is an RFC 9457 problem: ``application/problem+json`` with ``type``, ``title``,
``detail`` and ``status``.

Bad input is a 4xx that says what was wrong; nothing a client sends may produce a 500 with
a traceback. An unexpected error is logged here with its traceback and answered as a 500
problem without one.
"""

from __future__ import annotations

from http import HTTPStatus

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger("gateway.http")

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:backflush-gateway:problem:"


class ProblemBody(BaseModel):
    """RFC 9457 problem details (the OpenAPI schema of every error answer)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict] | None = None  # validation errors: where and what


class Problem(Exception):
    """Raise to answer with a problem; ``kind`` becomes the problem ``type``."""

    def __init__(self, status: int, kind: str, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail, self.headers = status, kind, detail, headers


def problem(status: int, detail: str, *, kind: str | None = None, errors: list[dict] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body = ProblemBody(type=TYPE_BASE + kind if kind else "about:blank", title=HTTPStatus(status).phrase,
                       status=status, detail=detail, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=MEDIA_TYPE,
                        headers=headers)


# The application layer's refusals (``gateway.app.errors.AppError.kind``).
APP_ERROR_STATUS = {"not_found": 404, "invalid": 422, "conflict": 409, "unavailable": 503}

# For the OpenAPI document: what the error answers look like.
PROBLEM_RESPONSES: dict[int | str, dict] = {
    code: {"model": ProblemBody, "content": {MEDIA_TYPE: {}}, "description": HTTPStatus(code).phrase}
    for code in (401, 403, 404, 409, 422)
}


def install(app: FastAPI) -> None:
    """Answer every error as a problem."""

    from gateway.app.errors import AppError

    @app.exception_handler(AppError)
    async def _refused(_: Request, exc: AppError) -> JSONResponse:
        status = APP_ERROR_STATUS[exc.kind]
        body = ProblemBody(type=TYPE_BASE + exc.kind.replace("_", "-"), title=exc.title, status=status,
                           detail=exc.detail)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=MEDIA_TYPE)

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem(exc.status, exc.detail, kind=exc.kind, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).description
        return problem(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type", "")}
                  for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "the request is not valid"
        return problem(422, detail, kind="invalid-request", errors=errors)

    @app.exception_handler(UnicodeEncodeError)
    async def _not_text(request: Request, exc: UnicodeEncodeError) -> JSONResponse:
        # JSON may carry lone surrogates ("\ud800"), which no database stores as text.
        log.warning("http_bad_text", method=request.method, path=request.url.path, error=str(exc)[:200])
        return problem(422, "the request holds text that is not valid Unicode (a lone surrogate)",
                       kind="invalid-request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("http_unexpected_error", method=request.method, path=request.url.path, error=repr(exc)[:300],
                  exc_info=exc, hint="a bug in the HTTP layer or the operation it called; the gateway goes on")
        return problem(500, "an unexpected error; it is in the gateway's log", kind="internal-error")
