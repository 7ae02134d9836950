"""FIDO2/WebAuthn security keys and passkeys with py_webauthn: options, registration, assertions.

The relying party is the issuer: the RP ID is the issuer's host and the only accepted origin is the issuer's
origin, both taken from the configuration and never from a request's ``Host`` header (a proxy or an
attacker chooses that header; the authenticator binds its answer to what the browser saw).

Every ceremony answers one challenge stored in the database: 32 random bytes, valid 5 minutes, bound to a
ceremony (registration or authentication), a purpose (``login:<transaction>``, ``enroll:<user>``...) and,
where known, a user. The challenge is consumed with one atomic ``UPDATE ... WHERE consumed_at IS NULL``
*before* the response is verified, so a response can be tried once, in one server process.

Every refusal is a ``WebAuthnError`` with a message for the user and a ``reason`` for the audit trail. The
consumed challenge, a flagged credential and its audit row are written to the caller's session: the caller
catches ``WebAuthnError`` *inside* its unit of work (a protocol error is an ordinary result there), or the
rollback would undo them.

Sign counts (WebAuthn Level 2, 6.1.1): a counter that does not grow while either side is non-zero means
the key may have been cloned. py_webauthn compares counters before it checks the signature, so the counter
is compared here, after the signature has been verified: otherwise anyone who knows a credential id could
get a victim's key blocked with a forged assertion.

Attestation is ``none`` by default. With ``[webauthn] allowed_aaguids`` the options ask for ``direct``
attestation and a registration is accepted only with an attestation certificate chain that ends in one of
the configured vendor roots, from a listed model: a ``none`` or self attestation only claims its AAGUID.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import webauthn
from cryptography import x509
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from webauthn.helpers import (
    bytes_to_base64url,
    options_to_json_dict,
    parse_attestation_object,
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AttestationObject,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from idp import audit
from idp.config import WebAuthnSettings
from idp.crypto import random_token
from idp.db import rowcount
from idp.models import User, WebAuthnChallenge, WebAuthnCredential
from idp.web.i18n import N_

log = logging.getLogger("idp.webauthn")

CHALLENGE_LIFETIME = timedelta(minutes=5)
CHALLENGE_BYTES = 32
USER_HANDLE_BYTES = 64
MAX_CREDENTIALS = 20
"""Credentials per user: more than anyone carries, few enough to keep allowCredentials small."""

ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,  # ES256: every FIDO2 key
    COSEAlgorithmIdentifier.EDDSA,  # Ed25519
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,  # RS256: Windows Hello
]
"""Offered in the options and the only ones accepted in a registration (no SHA-1, no unlisted curve)."""

# Formats whose statements carry a certificate chain (x5c) that py_webauthn checks against given roots.
_CHAINED_FORMATS = (AttestationFormat.PACKED, AttestationFormat.TPM, AttestationFormat.FIDO_U2F,
                    AttestationFormat.ANDROID_KEY, AttestationFormat.APPLE)
_AAGUID_EXTENSION = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")  # id-fido-gen-ce-aaguid
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

REGISTRATION = "registration"
AUTHENTICATION = "authentication"

_TRY_AGAIN = "The security key request has expired or was already used. Please try again."
_NOT_ACCEPTED = "The security key's answer could not be verified. Please try again."


class WebAuthnError(ValueError):
    """A refused ceremony: ``str(error)`` is for the user, ``reason`` for the audit trail."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


def rp_id(issuer: str) -> str:
    """The RP ID: the issuer's host (a browser accepts it on that host and nowhere else).

    An IP address is not a valid RP ID for browsers; run a local server as ``http://localhost:PORT``.
    """
    host = urlsplit(issuer).hostname
    if not host:
        raise ValueError("the issuer has no host")
    return host.lower()


def expected_origin(issuer: str) -> str:
    """The issuer's origin as a browser writes it into clientDataJSON: scheme://host[:port], no default port."""
    parts = urlsplit(issuer)
    host = rp_id(issuer)
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or (parts.scheme, port) in {("https", 443), ("http", 80)}:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


@dataclass(frozen=True)
class _Attestation:
    preference: AttestationConveyancePreference
    roots: dict[AttestationFormat, list[bytes]] | None
    aaguids: frozenset[str]


def _attestation(settings: WebAuthnSettings) -> _Attestation:
    if not settings.allowed_aaguids:
        return _Attestation(AttestationConveyancePreference.NONE, None, frozenset())
    roots: list[bytes] = []
    try:
        for path in settings.attestation_roots:
            for pem in _PEM_CERTIFICATE.findall(Path(path).read_bytes()):
                x509.load_pem_x509_certificate(pem)
                roots.append(pem)
    except (OSError, ValueError) as exc:
        log.error("webauthn: cannot read the attestation roots %s: %s", settings.attestation_roots, exc)
        roots = []
    if not roots:
        # Without roots py_webauthn accepts any chain, which would make the AAGUID list self-asserted.
        log.error("webauthn: allowed_aaguids is set but attestation_roots holds no certificate")
        raise WebAuthnError(N_("Security keys cannot be registered at the moment (the server's attestation "
                            "settings are incomplete). Please contact the IT service desk."),
                            reason="attestation_roots_missing")
    return _Attestation(AttestationConveyancePreference.DIRECT, {fmt: roots for fmt in _CHAINED_FORMATS},
                        frozenset(a.strip().lower() for a in settings.allowed_aaguids))


def _transports(values: list[str]) -> list[AuthenticatorTransport]:
    known = {t.value for t in AuthenticatorTransport}
    return [AuthenticatorTransport(v) for v in values if v in known]


def _descriptors(credentials: list[WebAuthnCredential]) -> list[PublicKeyCredentialDescriptor]:
    return [PublicKeyCredentialDescriptor(id=c.credential_id, transports=_transports(c.transports) or None)
            for c in credentials]


def credentials_of(db: Session, user: User, *, include_flagged: bool = False) -> list[WebAuthnCredential]:
    query = select(WebAuthnCredential).where(WebAuthnCredential.user_id == user.id)
    if not include_flagged:
        query = query.where(WebAuthnCredential.flagged_at.is_(None))
    return list(db.scalars(query.order_by(WebAuthnCredential.created_at, WebAuthnCredential.id)))


def user_handle(db: Session, user: User) -> bytes:
    """The user's stable random WebAuthn user handle, made on first use (never the username or email)."""
    if user.webauthn_handle is None:
        # Atomic, so two first registrations in parallel agree on one handle.
        db.execute(update(User).where(User.id == user.id, User.webauthn_handle.is_(None))
                   .values(webauthn_handle=secrets.token_bytes(USER_HANDLE_BYTES)))
        db.refresh(user, ["webauthn_handle"])
    assert user.webauthn_handle is not None
    return user.webauthn_handle


def _store_challenge(db: Session, challenge: bytes, *, ceremony: str, purpose: str, user: User | None,
                     user_verification: str, now: datetime, **extra: Any) -> str:
    # Expired challenges are useless; dropping them here keeps the table as small as five minutes of use.
    db.execute(delete(WebAuthnChallenge).where(WebAuthnChallenge.expires_at < now))
    challenge_id = random_token(32)
    db.add(WebAuthnChallenge(id=challenge_id, user_id=user.id if user else None, purpose=purpose,
                             challenge=challenge, created_at=now, expires_at=now + CHALLENGE_LIFETIME,
                             extra={"ceremony": ceremony, "uv": user_verification, **extra}))
    db.flush()
    return challenge_id


def _consume(db: Session, challenge_id: object, *, ceremony: str, purpose: str, user: User | None,
             now: datetime) -> WebAuthnChallenge:
    """Use the challenge up, or refuse: unknown, issued for another ceremony, purpose or user, expired, used."""
    row = db.get(WebAuthnChallenge, challenge_id) if isinstance(challenge_id, str) and 0 < len(challenge_id) <= 64 \
        else None
    if row is None:
        raise WebAuthnError(_TRY_AGAIN, reason="unknown_challenge")
    if row.extra.get("ceremony") != ceremony or row.purpose != purpose or row.user_id != (user.id if user else None):
        raise WebAuthnError(_TRY_AGAIN, reason="foreign_challenge")
    won = rowcount(db.execute(
        update(WebAuthnChallenge)
        .where(WebAuthnChallenge.id == row.id, WebAuthnChallenge.consumed_at.is_(None),
               WebAuthnChallenge.expires_at > now)
        .values(consumed_at=now)
        .execution_options(synchronize_session=False)
    ))
    if won != 1:
        raise WebAuthnError(_TRY_AGAIN, reason="expired_challenge" if row.expires_at <= now else "replayed_challenge")
    return row


def _as_mapping(credential_json: object) -> dict[str, Any]:
    if isinstance(credential_json, str | bytes):
        try:
            credential_json = json.loads(credential_json)
        except ValueError:
            credential_json = None
    if not isinstance(credential_json, Mapping):
        raise WebAuthnError(_NOT_ACCEPTED, reason="malformed")
    return dict(credential_json)


def registration_options(db: Session, settings: WebAuthnSettings, issuer: str, user: User, now: datetime, *,
                         purpose: str, discoverable: bool) -> tuple[str, dict[str, Any]]:
    """Options for ``navigator.credentials.create()``; returns (challenge id, JSON-ready options).

    ``discoverable`` asks for a passkey (a resident credential with user verification, usable for passkey
    sign-in); otherwise a security key used as second factor after the password.
    """
    attestation = _attestation(settings)
    existing = credentials_of(db, user, include_flagged=True)
    if len(existing) >= MAX_CREDENTIALS:
        raise WebAuthnError(f"You already have {MAX_CREDENTIALS} security keys. Please remove one first.",
                            reason="too_many_credentials")
    uv = "required" if discoverable else settings.user_verification
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    options = webauthn.generate_registration_options(
        rp_id=rp_id(issuer),
        rp_name=settings.rp_name,
        user_name=user.username,
        user_id=user_handle(db, user),
        user_display_name=user.display_name or user.username,
        challenge=challenge,
        timeout=int(CHALLENGE_LIFETIME.total_seconds() * 1000),
        attestation=attestation.preference,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED if discoverable else ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement(uv),
        ),
        exclude_credentials=_descriptors(existing),
        supported_pub_key_algs=ALGORITHMS,
    )
    challenge_id = _store_challenge(db, challenge, ceremony=REGISTRATION, purpose=purpose, user=user,
                                    user_verification=uv, now=now, discoverable=discoverable)
    return challenge_id, options_to_json_dict(options)


def register(db: Session, settings: WebAuthnSettings, issuer: str, user: User, challenge_id: str,
             credential_json: object, name: str, now: datetime, *, purpose: str) -> WebAuthnCredential:
    """Verify the browser's answer to ``registration_options`` and store the new credential."""
    row = _consume(db, challenge_id, ceremony=REGISTRATION, purpose=purpose, user=user, now=now)
    attestation = _attestation(settings)
    data = _as_mapping(credential_json)
    try:
        parsed: RegistrationCredential = parse_registration_credential_json(data)
        verified = webauthn.verify_registration_response(
            credential=parsed,
            expected_challenge=row.challenge,
            expected_rp_id=rp_id(issuer),
            expected_origin=expected_origin(issuer),
            require_user_presence=True,
            require_user_verification=settings.user_verification == "required" or row.extra.get("uv") == "required",
            supported_pub_key_algs=ALGORITHMS,
            pem_root_certs_bytes_by_fmt=attestation.roots,
        )
        statement = parse_attestation_object(verified.attestation_object)
    except Exception as exc:  # untrusted input: any failure in parsing or verifying is a refusal, never a 500
        log.info("webauthn: registration refused: %s", exc)
        raise _refusal(exc) from exc
    if attestation.roots is not None:
        _check_attestation(attestation, verified.aaguid, statement)
    if db.scalar(select(WebAuthnCredential.id).where(WebAuthnCredential.credential_id == verified.credential_id)):
        raise WebAuthnError(N_("This security key is already registered."), reason="duplicate_credential")
    credential = WebAuthnCredential(
        user_id=user.id,
        name=(name or "").strip()[:64] or ("Passkey" if row.extra.get("discoverable") else "Security key"),
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        transports=[t.value for t in parsed.response.transports or []],
        # Requested as required: the browser fails the ceremony rather than make a non-resident credential.
        discoverable=bool(row.extra.get("discoverable")),
        backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
        created_at=now,
    )
    try:
        with db.begin_nested():  # the unique index decides between two parallel registrations of one key
            db.add(credential)
    except IntegrityError as exc:
        raise WebAuthnError(N_("This security key is already registered."), reason="duplicate_credential") from exc
    return credential


def _refusal(exc: Exception) -> WebAuthnError:
    """A message for the user and a reason for the audit trail, from py_webauthn's (English) exception text."""
    text = str(exc)
    if "origin" in text or "RP ID" in text:
        return WebAuthnError(N_("This security key answered for another website. Please sign in at this address."),
                             reason="wrong_origin_or_rp_id")
    if "client data type" in text:
        return WebAuthnError(_NOT_ACCEPTED, reason="wrong_ceremony")
    if "User verification is required" in text:
        return WebAuthnError(N_("Your security key must verify you (PIN or fingerprint). Please try again."),
                             reason="user_not_verified")
    if "presence" in text or "not present" in text:
        return WebAuthnError(N_("Please touch your security key to confirm."), reason="user_not_present")
    if "Unsupported credential public key alg" in text:
        return WebAuthnError(N_("This security key uses a signature algorithm that is not accepted here."),
                             reason="unsupported_algorithm")
    if "signature" in text:
        return WebAuthnError(_NOT_ACCEPTED, reason="bad_signature")
    return WebAuthnError(_NOT_ACCEPTED, reason="invalid_response")


def _check_attestation(attestation: _Attestation, aaguid: str, statement: AttestationObject) -> None:
    """Only a chain to a configured root proves the model; then the model must be on the list."""
    x5c: list[bytes] | None = statement.att_stmt.x5c if statement.att_stmt else None
    if statement.fmt not in _CHAINED_FORMATS or not x5c:
        raise WebAuthnError(N_("Only security keys issued by your administration can be registered here."),
                            reason="attestation_missing")
    try:
        leaf = x509.load_der_x509_certificate(x5c[0])
        extension = leaf.extensions.get_extension_for_oid(_AAGUID_EXTENSION).value
    except x509.ExtensionNotFound:
        extension = None
    except ValueError as exc:
        raise WebAuthnError(_NOT_ACCEPTED, reason="invalid_response") from exc
    if isinstance(extension, x509.UnrecognizedExtension):
        # The extension value is an OCTET STRING of the 16 AAGUID bytes (WebAuthn 8.2.1).
        value = extension.value
        if not (len(value) == 18 and value[:2] == b"\x04\x10" and value[2:].hex() == aaguid.replace("-", "")):
            raise WebAuthnError(_NOT_ACCEPTED, reason="aaguid_mismatch")
    if aaguid.lower() not in attestation.aaguids:
        raise WebAuthnError(N_("Only security keys issued by your administration can be registered here."),
                            reason="aaguid_not_allowed")


def authentication_options(db: Session, settings: WebAuthnSettings, issuer: str, user: User | None,
                           now: datetime, *, purpose: str) -> tuple[str, dict[str, Any]]:
    """Options for ``navigator.credentials.get()``; returns (challenge id, JSON-ready options).

    With a user (second step, step-up): that user's credentials. Without (passkey sign-in): an empty
    allowCredentials, so the browser offers discoverable credentials, and user verification is required.
    """
    if user is not None:
        allowed = _descriptors(credentials_of(db, user))
        if not allowed:
            raise WebAuthnError(N_("No security key is registered for this account."), reason="no_credentials")
        uv = settings.user_verification
    else:
        allowed, uv = [], "required"
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    options = webauthn.generate_authentication_options(
        rp_id=rp_id(issuer),
        challenge=challenge,
        timeout=int(CHALLENGE_LIFETIME.total_seconds() * 1000),
        allow_credentials=allowed,
        user_verification=UserVerificationRequirement(uv),
    )
    challenge_id = _store_challenge(db, challenge, ceremony=AUTHENTICATION, purpose=purpose, user=user,
                                    user_verification=uv, now=now)
    return challenge_id, options_to_json_dict(options)


def amr_of(credential: WebAuthnCredential, *, user_verified: bool) -> list[str]:
    """RFC 8176: ``hwk`` for a device-bound key, ``swk`` for a synced passkey; ``user`` when verified."""
    amr = ["swk" if credential.backup_eligible else "hwk"]
    if user_verified:
        amr.append("user")
    return amr


def authenticate(db: Session, settings: WebAuthnSettings, issuer: str, challenge_id: str, credential_json: object,
                 now: datetime, *, purpose: str, user: User | None, origin: audit.Origin | None = None,
                 client_id: str | None = None) -> tuple[WebAuthnCredential, list[str]]:
    """Verify an assertion; returns the credential used and its ``amr`` values.

    With ``user`` the credential must be one of theirs; without (passkey sign-in) the credential's owner
    signs in, so the authenticator must return the owner's user handle and have verified the user. The
    caller loads ``credential.user_id`` and checks the account is active, as after a password.
    """
    row = _consume(db, challenge_id, ceremony=AUTHENTICATION, purpose=purpose, user=user, now=now)
    data = _as_mapping(credential_json)
    try:
        parsed: AuthenticationCredential = parse_authentication_credential_json(data)
    except (WebAuthnException, ValueError, TypeError) as exc:
        raise WebAuthnError(_NOT_ACCEPTED, reason="malformed") from exc
    credential = db.scalar(select(WebAuthnCredential).where(WebAuthnCredential.credential_id == parsed.raw_id))
    if credential is None or (user is not None and credential.user_id != user.id):
        raise WebAuthnError(N_("This security key is not registered for this account."), reason="unknown_credential")
    owner = db.get(User, credential.user_id)
    assert owner is not None
    handle = parsed.response.user_handle
    if user is None and not handle:
        raise WebAuthnError(N_("This passkey did not say which account it belongs to. Please use your username."),
                            reason="user_handle_missing")
    # A user handle, when sent, must be the owner's (WebAuthn 7.2 step 6), also in the second step.
    if handle and (owner.webauthn_handle is None or not hmac.compare_digest(handle, owner.webauthn_handle)):
        raise WebAuthnError(N_("This security key is not registered for this account."), reason="user_handle_mismatch")
    if credential.flagged_at is not None:
        raise WebAuthnError(N_("This security key has been blocked because it may have been copied. Please use "
                            "another method and contact the IT service desk."), reason="flagged_credential")
    require_uv = user is None or settings.user_verification == "required" or row.extra.get("uv") == "required"
    try:
        # The stored counter is compared below, after the signature is known to be good (see module doc).
        verified = webauthn.verify_authentication_response(
            credential=parsed,
            expected_challenge=row.challenge,
            expected_rp_id=rp_id(issuer),
            expected_origin=expected_origin(issuer),
            credential_public_key=credential.public_key,
            credential_current_sign_count=0,
            require_user_verification=require_uv,
        )
    except Exception as exc:  # untrusted input: any failure in parsing or verifying is a refusal, never a 500
        log.info("webauthn: assertion refused for credential %s: %s", credential.id, exc)
        raise _refusal(exc) from exc
    new_count = verified.new_sign_count
    # One atomic update: the counter must grow (or both stay 0, as synced passkeys report), checked against
    # the stored value at this moment, so two processes cannot both accept the same counter.
    won = rowcount(db.execute(
        update(WebAuthnCredential)
        .where(WebAuthnCredential.id == credential.id, WebAuthnCredential.flagged_at.is_(None),
               WebAuthnCredential.sign_count < new_count if new_count > 0 else WebAuthnCredential.sign_count == 0)
        .values(sign_count=new_count, last_used_at=now)
        .execution_options(synchronize_session=False)
    ))
    db.refresh(credential)
    if won != 1:
        if credential.flagged_at is None:
            _flag_cloned(db, credential, owner, new_count, now, origin=origin, client_id=client_id)
        raise WebAuthnError(N_("This security key has been blocked because it may have been copied. Please use "
                            "another method and contact the IT service desk."), reason="sign_count_regression")
    return credential, amr_of(credential, user_verified=verified.user_verified)


def _flag_cloned(db: Session, credential: WebAuthnCredential, owner: User, presented: int, now: datetime, *,
                 origin: audit.Origin | None, client_id: str | None) -> None:
    stored = credential.sign_count
    db.execute(update(WebAuthnCredential).where(WebAuthnCredential.id == credential.id,
                                                WebAuthnCredential.flagged_at.is_(None))
               .values(flagged_at=now).execution_options(synchronize_session=False))
    db.refresh(credential)
    audit.record(db, "webauthn.cloned", outcome="failure", origin=origin or audit.Origin(), actor=owner.sub,
                 subject=owner.username, client_id=client_id, at=now, credential=credential.id,
                 credential_name=credential.name, aaguid=credential.aaguid, stored_count=stored,
                 presented_count=presented)
    db.flush()
    log.warning("webauthn: sign count of credential %s went from %s to %s; flagged as possibly cloned",
                credential.id, stored, presented)


def rename(db: Session, user: User, credential_id: int, name: str) -> bool:
    """Rename one of the user's credentials (``credential_id`` is the row id shown on the account page)."""
    new_name = name.strip()[:64]
    if not new_name:
        return False
    return rowcount(db.execute(update(WebAuthnCredential).where(
        WebAuthnCredential.id == credential_id, WebAuthnCredential.user_id == user.id).values(name=new_name)
        .execution_options(synchronize_session=False))) == 1


def remove(db: Session, user: User, credential_id: int) -> bool:
    """Delete one of the user's credentials; False when it is not theirs (or already gone)."""
    return rowcount(db.execute(delete(WebAuthnCredential).where(
        WebAuthnCredential.id == credential_id, WebAuthnCredential.user_id == user.id)
        .execution_options(synchronize_session=False))) == 1


def credential_id_text(credential: WebAuthnCredential) -> str:
    """The credential id as base64url, as browsers and DevTools show it."""
    return bytes_to_base64url(credential.credential_id)
