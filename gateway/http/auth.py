"""Bearer tokens with roles: who may read (``viewer``) and who may also change the ledger (``operator``).

Tokens are configured as a YAML or JSON list of ``{name, role, sha256}`` — the SHA-256 of the
token, never the token itself — in a file (``--tokens FILE``) or in the ``GATEWAY_TOKENS``
environment variable. ``gateway token new`` makes a token and prints it once. A presented
token is hashed and compared with every configured hash in constant time. This module never
stores, logs or echoes a token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENV_VAR = "GATEWAY_TOKENS"
TOKEN_PREFIX = "bgw_"


class Role(str, Enum):
    viewer = "viewer"
    operator = "operator"  # everything a viewer may, and ledger operations

    def allows(self, needed: Role) -> bool:
        return self is Role.operator or needed is Role.viewer


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the token")


class TokenConfigError(ValueError):
    """The tokens file or variable is not a list of {name, role, sha256}; the message says where."""


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The configured tokens; ``who(token)`` is the matching principal, or None."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self._entries = [(bytes.fromhex(e.sha256), Principal(e.name, e.role)) for e in entries]

    def __len__(self) -> int:
        return len(self._entries)

    def who(self, token: str) -> Principal | None:
        presented = hashlib.sha256(token.encode()).digest()
        found = None
        for stored, principal in self._entries:  # every entry, so the time does not tell which one matched
            if hmac.compare_digest(presented, stored) and found is None:
                found = principal
        return found

    @classmethod
    def parse(cls, text: str, where: str) -> Tokens:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        try:
            data = YAML(typ="safe").load(text)
        except YAMLError as exc:
            raise TokenConfigError(f"{where}: not YAML or JSON ({str(exc).splitlines()[0]})") from None
        if data is None:
            data = []
        if not isinstance(data, list):
            raise TokenConfigError(f"{where}: expected a list of {{name, role, sha256}}, got {type(data).__name__}")
        entries = []
        for i, item in enumerate(data):
            try:
                entries.append(TokenEntry.model_validate(item))
            except ValidationError as exc:
                what = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
                raise TokenConfigError(f"{where}: entry {i + 1}: {what}") from None
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise TokenConfigError(f"{where}: a token name is used twice ({sorted({n for n in names if names.count(n) > 1})})")
        return cls(entries)

    @classmethod
    def load(cls, file: Path | None) -> Tokens:
        """From ``file``, else from ``GATEWAY_TOKENS``, else none (then every API request is 401)."""
        if file is not None:
            try:
                return cls.parse(file.read_text(encoding="utf-8"), str(file))
            except OSError as exc:
                raise TokenConfigError(f"{file}: cannot read ({exc.strerror or exc})") from None
        text = os.environ.get(ENV_VAR)
        return cls.parse(text, ENV_VAR) if text else cls([])


def new_token(name: str, role: Role) -> tuple[str, str]:
    """A new random token and the line that configures it (holding only its hash)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, f"- {{name: {json.dumps(name)}, role: {role.value}, sha256: {digest(token)}}}"
