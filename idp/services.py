"""The composition of long-lived parts that every request handler and CLI command needs.

Built once per process from the settings; nothing in it holds per-request state, so it is shared by all
threads. Time is read through ``clock`` so that tests can move it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from idp.accounts.passwords import Passwords
from idp.config import Settings
from idp.crypto import KeyedHasher, Sealer, decode_key_material, derive_key, load_or_create_key_file
from idp.db import create_db_engine, create_session_factory, utcnow
from idp.oauth.keys import KeyStore


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    passwords: Passwords
    hasher: KeyedHasher
    """Keyed hashes of high-entropy secrets (codes, tokens, client secrets, session ids)."""
    csrf_key: bytes
    sealer: Sealer
    key_retention: timedelta
    """How long a retired signing key stays published: the longest lifetime of a token it signed, and a margin."""
    clock: Callable[[], datetime] = field(default=utcnow)
    keys: KeyStore = field(init=False)

    def __post_init__(self) -> None:
        # The key store reads the time through the services, so that a clock replaced in tests reaches it too.
        self.keys = KeyStore(self.sessions, self.sealer, self.key_retention, clock=self.now)

    def now(self) -> datetime:
        return self.clock()


def _read_secret(value: str | None, file: str | None, generated: Path) -> bytes:
    if value:
        return decode_key_material(value)
    if file:
        return decode_key_material(Path(file).read_text())
    return load_or_create_key_file(generated)


def build_services(settings: Settings, engine: Engine | None = None) -> Services:
    data_dir = Path(settings.data_dir)
    master = _read_secret(settings.secret_key, settings.secret_key_file, data_dir / "secret.key")
    kek = _read_secret(settings.keys.encryption_key, settings.keys.encryption_key_file,
                       data_dir / "key-encryption.key")
    if len(kek) != 32:
        kek = derive_key(kek, "key-encryption")
    engine = engine or create_db_engine(settings.database_url, settings.database.pool_size)
    sessions = create_session_factory(engine)
    sealer = Sealer(kek)
    retention = max(settings.tokens.access_token_lifetime, settings.tokens.id_token_lifetime) + timedelta(minutes=5)
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        passwords=Passwords(settings.passwords),
        hasher=KeyedHasher(derive_key(master, "secret-hash")),
        csrf_key=derive_key(master, "csrf"),
        sealer=sealer,
        key_retention=retention,
    )
