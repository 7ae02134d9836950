"""Signing keys: creation, rotation, the published JWKS and the keys that sign.

Every token we sign (ID tokens, JWT access tokens, logout tokens) is signed by the newest key of the
wanted algorithm; ES256 is the default and RS256 (3072-bit RSA or more) serves relying parties that ask
for it. Private keys are stored sealed under the key-encryption key and parsed once per key version,
never per token (parsing an RSA key costs about 40 ms). A rotated key stays in the JWKS until every
token it signed has expired, so relying parties never meet a signature they cannot check.

Several server processes share the keys through the database; each process re-reads the key list at
most every ``REFRESH_SECONDS``, so a rotation reaches all of them within that time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from idp.crypto import Sealer
from idp.db import read_only, utcnow
from idp.models import SigningKey
from idp.oauth.requests import running_scope

SUPPORTED_ALGORITHMS = ("ES256", "RS256")
REFRESH_SECONDS = 10.0
MIN_FORCED_REFRESH_SECONDS = 1.0
"""An unknown ``kid`` forces a re-read at most this often, so forged tokens cannot hammer the database."""


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    alg: str
    private: ECKey | RSAKey
    public_jwk: dict[str, Any]
    created_at: datetime
    retired_at: datetime | None


def _generate(alg: str, rsa_bits: int) -> ECKey | RSAKey:
    if alg == "ES256":
        return ECKey.generate_key("P-256")
    if alg == "RS256":
        return RSAKey.generate_key(rsa_bits)
    raise ValueError(f"unsupported signing algorithm {alg}")


def create_key(db: Session, sealer: Sealer, alg: str, rsa_bits: int, now: datetime) -> SigningKey:
    key = _generate(alg, rsa_bits)
    kid = key.thumbprint()
    public = {**key.as_dict(private=False), "kid": kid, "alg": alg, "use": "sig"}
    row = SigningKey(
        kid=kid,
        alg=alg,
        public_jwk=public,
        private_key_encrypted=sealer.seal(key.as_pem(private=True), context=kid),
        created_at=now,
    )
    db.add(row)
    return row


PREPARE_LOCK = 0x6964702D6B657973
"""PostgreSQL advisory lock held by a transaction that creates the first keys ("idp-keys")."""


def ensure_keys(db: Session, sealer: Sealer, rsa_bits: int, now: datetime) -> list[SigningKey]:
    """Create a signing key for each algorithm that has none yet (first start)."""
    if db.get_bind().dialect.name == "postgresql":
        # Servers starting together on a fresh database take turns until the first commits (the lock lasts to
        # the end of the transaction, so the first administrator that ``idp.cli.prepare`` creates after the
        # keys is made once too); otherwise each would see no key and make its own set. SQLite: BEGIN
        # IMMEDIATE serialises writers already.
        db.execute(select(func.pg_advisory_xact_lock(PREPARE_LOCK)))
    created = []
    for alg in SUPPORTED_ALGORITHMS:
        active = db.scalar(select(SigningKey).where(SigningKey.alg == alg, SigningKey.retired_at.is_(None)).limit(1))
        if active is None:
            created.append(create_key(db, sealer, alg, rsa_bits, now))
    return created


def rotate_keys(db: Session, sealer: Sealer, rsa_bits: int, now: datetime) -> list[SigningKey]:
    """Publish and sign with new keys; the previous keys stay published until their tokens expire."""
    for row in db.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))):
        row.retired_at = now
    return [create_key(db, sealer, alg, rsa_bits, now) for alg in SUPPORTED_ALGORITHMS]


class KeyStore:
    """The process-wide view of the signing keys, refreshed from the database."""

    def __init__(self, sessions: sessionmaker[Session], sealer: Sealer, retention: timedelta,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock
        self._sealer = sealer
        self._retention = retention
        self._lock = threading.Lock()
        self._parsed: dict[str, LoadedKey] = {}
        self._loaded_at = -1e9
        self._published: list[LoadedKey] = []
        self._jwks_bytes = b'{"keys":[]}'

    def refresh(self, force: bool = False, max_age: float = REFRESH_SECONDS) -> None:
        """Re-read the keys if the copy is older than ``max_age`` seconds, or now with ``force``."""
        if not force and time.monotonic() - self._loaded_at < max_age:
            return
        with self._lock:
            if not force and time.monotonic() - self._loaded_at < max_age:
                return
            now = self._clock()
            published = []
            with self._reader() as db, db.no_autoflush:
                for row in db.scalars(select(SigningKey).order_by(SigningKey.created_at.desc())):
                    if row.retired_at is not None and row.retired_at + self._retention < now:
                        continue
                    loaded = self._parsed.get(row.kid)
                    if loaded is None or loaded.retired_at != row.retired_at:
                        loaded = self._load(row)
                        self._parsed[row.kid] = loaded
                    published.append(loaded)
            self._published = published
            self._jwks_bytes = json.dumps({"keys": [k.public_jwk for k in published]}, separators=(",", ":")).encode()
            self._loaded_at = time.monotonic()

    def _reader(self) -> AbstractContextManager[Session]:
        scope = running_scope()
        if scope is not None:
            # Inside a request, read with the request's own session: taking a second pooled connection while
            # holding one deadlocks once concurrent requests hold the whole pool (parallel replays of one code
            # do, the losers waiting on the winner's row lock), and the request fails after the pool timeout.
            return nullcontext(scope.db)
        return read_only(self._sessions)

    def _load(self, row: SigningKey) -> LoadedKey:
        pem = self._sealer.open(row.private_key_encrypted, context=row.kid)
        private: ECKey | RSAKey = ECKey.import_key(pem) if row.alg == "ES256" else RSAKey.import_key(pem)
        return LoadedKey(row.kid, row.alg, private, dict(row.public_jwk), row.created_at, row.retired_at)

    def signing_key(self, alg: str) -> LoadedKey:
        """The newest key of ``alg`` that has not been retired."""
        self.refresh()
        for key in self._published:
            if key.alg == alg and key.retired_at is None:
                return key
        self.refresh(max_age=MIN_FORCED_REFRESH_SECONDS)
        for key in self._published:
            if key.alg == alg and key.retired_at is None:
                return key
        raise LookupError(f"no active {alg} signing key; run `idp keys rotate`")

    def public_key_set(self) -> KeySet:
        self.refresh()
        return KeySet([ECKey.import_key(k.public_jwk) if k.alg == "ES256" else RSAKey.import_key(k.public_jwk)
                       for k in self._published])

    def verification_key(self, kid: str) -> LoadedKey | None:
        """A published key by ``kid``; an unknown kid triggers one early refresh (a fresh rotation)."""
        self.refresh()
        for key in self._published:
            if key.kid == kid:
                return key
        self.refresh(max_age=MIN_FORCED_REFRESH_SECONDS)
        return next((key for key in self._published if key.kid == kid), None)

    def fresh_jwks_bytes(self) -> bytes | None:
        """The JWKS document while the copy is fresh, without touching the database (so without a worker thread);
        None when ``jwks_bytes`` must refresh it first."""
        if time.monotonic() - self._loaded_at < REFRESH_SECONDS:
            return self._jwks_bytes
        return None

    def jwks_bytes(self) -> bytes:
        """The JWKS document, serialised once per refresh (it is fetched far more often than it changes)."""
        self.refresh()
        return self._jwks_bytes
