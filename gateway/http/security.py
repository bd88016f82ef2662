"""FastAPI dependencies that demand a bearer token of a role: 401 without a valid one, 403 for a
role that may not do it."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.http.auth import Principal, Role
from gateway.http.problems import Problem

_bearer = HTTPBearer(auto_error=False, description="A token made by `gateway token new`")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="backflush-gateway"'}


def _require(needed: Role):
    async def check(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
                    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Problem(401, "unauthorized", "this needs a bearer token (Authorization: Bearer <token>)",
                          headers=CHALLENGE)
        principal = request.app.state.ctx.tokens.who(credentials.credentials)
        if principal is None:
            raise Problem(401, "unauthorized", "the bearer token is not one of the configured tokens",
                          headers=CHALLENGE)
        if not principal.role.allows(needed):
            raise Problem(403, "forbidden", f"token {principal.name!r} has role {principal.role.value}; "
                          f"this needs {needed.value}")
        return principal

    return check


viewer = _require(Role.viewer)
operator = _require(Role.operator)
