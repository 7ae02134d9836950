"""Talking to a directory: connecting with failover, TLS that fails closed, timeouts, paged searches.

Every request of a source goes through ``connect``: the URLs are tried in order, each with the source's
timeout; ``ldaps://`` and StartTLS verify the certificate and the host name (a failed StartTLS is an error,
never a silent fallback to plain text), and a simple bind with a password over an unprotected connection is
refused unless the source sets ``allow_plaintext_bind`` (RFC 4513 5.1.2, 6.3.1).

Errors come in two kinds, both meaning that *nothing* was read: ``DirectoryUnavailable`` (no server could be
reached, TLS failed, the connection broke or timed out) and ``DirectoryFailure`` (the directory answered
with an error: a refused service bind, a bad filter, a missing base DN, a size limit).
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3 import BASE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import (
    LDAPCertificateError,
    LDAPCommunicationError,
    LDAPException,
    LDAPInvalidCredentialsResult,
    LDAPResponseTimeoutError,
    LDAPStartTLSError,
)

from idp.config import DirectorySource

PAGED_RESULTS = "1.2.840.113556.1.4.319"
"""Simple Paged Results control (RFC 2696)."""


class DirectoryError(Exception):
    """Nothing could be read from the directory; the message says why, without secrets."""


class DirectoryUnavailable(DirectoryError):
    """No URL of the source answered (down, unreachable, timed out) or TLS could not be established."""


class DirectoryFailure(DirectoryError):
    """The directory answered with an error (refused bind, bad filter or base DN, limits)."""


class InvalidCredentials(DirectoryFailure):
    """The directory refused a bind's DN and password."""


class _VerifiedTls(Tls):  # type: ignore[misc]
    """TLS with the standard library's certificate *and host name* verification, TLS 1.2 or newer.

    ldap3 2.9 checks host names through ``ssl.match_hostname``, deprecated since Python 3.7; the default
    context's own check is the maintained one.
    """

    def __init__(self, host: str, ca_file: str | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
        self._host = host
        self._ca_file = ca_file

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self._ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        connection.socket = context.wrap_socket(connection.socket, server_hostname=self._host,
                                                do_handshake_on_connect=True)


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str
    port: int
    ldaps: bool


def endpoints(source: DirectorySource) -> list[Endpoint]:
    result = []
    for url in source.url:
        parts = urlsplit(url)
        ldaps = parts.scheme == "ldaps"
        result.append(Endpoint(url, parts.hostname or "", parts.port or (636 if ldaps else 389), ldaps))
    return result


def _server(source: DirectorySource, endpoint: Endpoint) -> Server:
    tls = _VerifiedTls(endpoint.host, source.ca_file) if endpoint.ldaps or source.start_tls else None
    return Server(endpoint.host, port=endpoint.port, use_ssl=endpoint.ldaps, tls=tls, get_info=NONE,
                  connect_timeout=source.timeout.total_seconds())


def _is_protected(connection: Connection) -> bool:
    return bool(connection.server.ssl or connection.tls_started)


LEAN_DECODER_VERSIONS = {"2.9", "2.9.1"}
"""ldap3 releases whose internal message layout ``_decode_entries_lean`` relies on (2.9.1 is the latest)."""


def _decode_entries_lean(connection: Connection) -> None:
    """Decode search result entries into ``dn`` and ``raw_attributes`` only.

    ldap3 also builds a second, text-formatted copy of every value (``attributes``), which this package never
    reads; for a listing of 10,000 accounts that copy is about 40 % of the decoding time, and decoding is what
    bounds an incremental run (see bench/README.md). Only this connection is changed, only for ldap3 releases
    whose message layout is known, and any entry the lean path cannot read goes to ldap3's own decoder.
    """
    if getattr(ldap3, "__version__", None) not in LEAN_DECODER_VERSIONS or not connection.fast_decoder:
        return
    original = connection.strategy.decode_response_fast

    def decode(message: dict[str, Any]) -> dict[str, Any]:
        if message.get("protocolOp") == 4:  # searchResEntry (RFC 4511 4.5.2)
            try:
                payload = message["payload"]
                return {
                    "type": "searchResEntry", "raw_dn": payload[0][3], "dn": payload[0][3].decode("utf-8"),
                    "raw_attributes": {bytes(attribute[3][0][3]).decode("ascii"):
                                       [bytes(value[3]) for value in attribute[3][1][3]]
                                       for attribute in payload[1][3]},
                    "attributes": {},
                }
            except (UnicodeDecodeError, AttributeError, IndexError, KeyError, TypeError):
                pass  # a DN that is not UTF-8 (some AD data) and the like: ldap3 knows its fallbacks
        result: dict[str, Any] = original(message)
        return result

    connection.strategy.decode_response_fast = decode


def _open(source: DirectorySource, endpoint: Endpoint, user: str | None, password: str | None) -> Connection:
    connection = Connection(
        _server(source, endpoint), user=user, password=password, auto_bind=False, raise_exceptions=True,
        read_only=True, auto_referrals=False,
        # We read raw_attributes only; schema-checked formatting of every value would double the decoding cost.
        check_names=False,
        # ldap3 packs this into SO_RCVTIMEO as whole seconds; a float there fails with a TypeError.
        receive_timeout=max(1, math.ceil(source.timeout.total_seconds())),
    )
    _decode_entries_lean(connection)
    try:
        connection.open()
        if source.start_tls and not endpoint.ldaps:
            # A refused or stripped StartTLS ends the attempt; we never go on in plain text (RFC 4513 3.1.1).
            try:
                connection.start_tls()
            except Exception as exc:
                raise DirectoryUnavailable(f"StartTLS failed ({describe(exc)}); nothing was sent") from exc
        if user is not None:
            if not _is_protected(connection) and not source.allow_plaintext_bind:
                raise DirectoryFailure(f"{endpoint.url}: refusing to send a password over an unencrypted "
                                       "connection (use ldaps://, start_tls, or allow_plaintext_bind)")
            connection.bind()
    except BaseException:
        _close(connection)
        raise
    return connection


def _close(connection: Connection) -> None:
    try:
        connection.unbind()
    except Exception:  # closing a broken connection may fail in many ways; nothing is lost
        pass
    # ldap3 leaves the socket of a connection that failed to open (or broke) unclosed; close it here.
    sock = getattr(connection, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def describe(exc: BaseException) -> str:
    """A short reason for logs and the sync history; never contains a password."""
    if isinstance(exc, DirectoryError):
        return str(exc)
    if isinstance(exc, LDAPInvalidCredentialsResult):
        return "the bind was refused (invalid credentials)"
    if isinstance(exc, LDAPResponseTimeoutError | TimeoutError):
        return "no answer within the timeout"
    if isinstance(exc, LDAPStartTLSError):
        return f"StartTLS failed: {exc}"
    if isinstance(exc, LDAPCertificateError | ssl.SSLError):
        return f"TLS failed: {exc}"
    text = str(exc).strip() or type(exc).__name__
    return text[:300]


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, LDAPCommunicationError | LDAPStartTLSError | LDAPCertificateError |
                      LDAPResponseTimeoutError | ssl.SSLError | OSError)


def connect(source: DirectorySource, user: str | None, password: str | None,
            prefer: str | None = None) -> tuple[Connection, str]:
    """A bound connection to the first URL of ``source`` that answers (``prefer`` first, if given)."""
    candidates = endpoints(source)
    if prefer is not None:
        candidates.sort(key=lambda endpoint: endpoint.url != prefer)
    reasons = []
    for endpoint in candidates:
        try:
            return _open(source, endpoint, user, password), endpoint.url
        except LDAPInvalidCredentialsResult as exc:
            raise InvalidCredentials(f"{endpoint.url}: the bind as {user} was refused") from exc
        except DirectoryFailure:
            raise
        except Exception as exc:  # every other reason means: try the next URL
            if not _unavailable(exc) and isinstance(exc, LDAPException):
                raise DirectoryFailure(f"{endpoint.url}: {describe(exc)}") from exc
            reasons.append(f"{endpoint.url}: {describe(exc)}")
    raise DirectoryUnavailable("the directory cannot be reached (" + "; ".join(reasons) + ")")


class DirectoryClient:
    """A connection bound as the source's service account, for the searches of one sync run or sign-in."""

    def __init__(self, source: DirectorySource, prefer: str | None = None) -> None:
        self.source = source
        try:
            password = source.read_bind_password()
        except OSError as exc:
            raise DirectoryFailure(f"cannot read bind_password_file: {exc.strerror}") from exc
        self.connection, self.url = connect(source, source.bind_dn, password, prefer)

    def close(self) -> None:
        _close(self.connection)

    def __enter__(self) -> DirectoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except DirectoryError:
            raise
        except Exception as exc:  # ldap3 raises many types; all mean the read is incomplete
            cls = DirectoryUnavailable if _unavailable(exc) else DirectoryFailure
            raise cls(f"{self.url}: {what}: {describe(exc)}") from exc

    def root_dse(self, attributes: list[str]) -> dict[str, list[bytes]]:
        with self._errors("reading the root DSE"):
            self.connection.search("", "(objectClass=*)", search_scope=BASE, attributes=attributes)
        for entry in self.connection.response or []:
            if entry.get("type") == "searchResEntry":
                return {name.lower(): values for name, values in entry["raw_attributes"].items()}
        return {}

    def search(self, base: str, search_filter: str, attributes: list[str],
               on_page: Callable[[int], None] | None = None,
               scope: str = SUBTREE) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
        """All entries below ``base`` matching the filter, fetched in pages of ``page_size`` (RFC 2696).

        Yields ``(dn, raw_attributes)``; any error (including a size limit) raises, so a caller never mistakes
        a partial listing for a complete one.
        """
        cookie: bytes | None = None
        while True:
            with self._errors(f"searching {base}"):
                self.connection.search(base, search_filter, search_scope=scope, attributes=attributes,
                                       paged_size=self.source.page_size, paged_cookie=cookie)
            count = 0
            for entry in self.connection.response or []:
                # Continuation references (AD's referrals to other partitions) are not entries of this source.
                if entry.get("type") == "searchResEntry":
                    count += 1
                    yield entry["dn"], entry["raw_attributes"]
            if on_page is not None:
                on_page(count)
            control = (self.connection.result.get("controls") or {}).get(PAGED_RESULTS)
            cookie = control["value"]["cookie"] if control else None
            if not cookie:
                return
