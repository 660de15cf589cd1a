"""Reviewers' accounts: one personal token per radiologist, kept hashed in a file the operator manages.

The file has one line per account, ``name:sha256:<hex digest of the token>`` (``#`` starts a
comment). ``mura reviewers add NAME`` draws a 256-bit random token, prints it once and stores
only its SHA-256: a token is a random secret, not a password, so a fast hash is enough (no
dictionary to guess from) and a stolen file gives no token back. The servers re-read the file
when it changes, so an operator adds or removes an account without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
from pathlib import Path

from mura.errors import ConfigError

__all__ = ["ReviewerFile"]

NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
SCHEME = "sha256"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ReviewerFile:
    """The accounts file (read lazily, re-read when its modification time changes).

    Args:
        path: the file (created by :meth:`add` with mode 0600).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._accounts: dict[str, str] = {}

    def accounts(self) -> dict[str, str]:
        """Account name → token digest, as the file says now.

        Raises:
            ConfigError: a line is not ``name:sha256:<64 hex>``.
        """
        with self._lock:
            try:
                status = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._accounts = None, {}
                return {}
            stamp = (status.st_mtime_ns, status.st_size)
            if stamp != self._stamp:
                self._accounts, self._stamp = self._parse(), stamp
            return dict(self._accounts)

    def _parse(self) -> dict[str, str]:
        accounts: dict[str, str] = {}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split(":")
            if len(parts) != 3 or parts[1] != SCHEME or not NAME.match(parts[0]) or not re.fullmatch(r"[0-9a-f]{64}", parts[2]):
                raise ConfigError(f"{self.path}:{number}: expected name:{SCHEME}:<64 hex digits> (mura reviewers add NAME)")
            accounts[parts[0]] = parts[2]
        return accounts

    def who(self, token: str) -> str | None:
        """The account a token belongs to, or None (compared in constant time with every account)."""
        if not token:
            return None
        digest = _digest(token)
        found = None
        for name, stored in self.accounts().items():
            if hmac.compare_digest(stored, digest):
                found = name
        return found

    def add(self, name: str) -> str:
        """Create (or renew) an account; the new token, shown once.

        Raises:
            ValueError: the name is not 1-64 letters, digits or ``._@-``.
        """
        if not NAME.match(name):
            raise ValueError(f"account name {name!r}: 1 to 64 letters, digits or . _ @ -")
        token = secrets.token_urlsafe(32)
        accounts = self.accounts() | {name: _digest(token)}
        self._write(accounts)
        return token

    def remove(self, name: str) -> bool:
        """Delete an account; whether it existed."""
        accounts = self.accounts()
        if accounts.pop(name, None) is None:
            return False
        self._write(accounts)
        return True

    def _write(self, accounts: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("# mura reviewers: name:sha256:<digest of the token> (mura reviewers add|remove NAME)\n")
            handle.writelines(f"{name}:{SCHEME}:{digest}\n" for name, digest in sorted(accounts.items()))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)
