"""WebAuthn as a domain module (idp.factors.webauthn), driven by a software authenticator with real keys.

Each ceremony step runs in its own unit of work, as the HTTP handlers will; refusals are caught inside the
unit of work, so what a refusal writes (a consumed challenge, a flagged key, an audit row) is committed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.config import WebAuthnSettings
from idp.db import unit_of_work
from idp.factors import webauthn as wa
from idp.models import AuditEvent, User, WebAuthnChallenge, WebAuthnCredential
from idp.services import Services
from tests.helpers import add_user
from tests.soft_authenticator import AttestationCA, SoftAuthenticator, b64url, unb64url

ISSUER = "https://idp.test"
ORIGIN = "https://idp.test"
ENROLL = "enroll:test"
LOGIN = "login:tx-1"
T = TypeVar("T")


# --- helpers --------------------------------------------------------------------------------------------

def _user(db: Session, username: str) -> User:
    user = db.scalar(select(User).where(User.username == username))
    assert user is not None
    return user


def _attempt(services: Services, step: Callable[[Session], T]) -> T | wa.WebAuthnError:
    """Run one request's work; a refusal is an answer, caught inside the unit of work like the handlers do."""
    with unit_of_work(services.sessions) as db:
        try:
            return step(db)
        except wa.WebAuthnError as error:
            return error


def _settings(services: Services, **changes: Any) -> WebAuthnSettings:
    return dataclasses.replace(services.settings.webauthn, **changes)


def _reg_options(services: Services, username: str = "erika", *, discoverable: bool = False,
                 purpose: str = ENROLL, settings: WebAuthnSettings | None = None) -> tuple[str, dict[str, Any]]:
    with unit_of_work(services.sessions) as db:
        return wa.registration_options(db, settings or services.settings.webauthn, ISSUER, _user(db, username),
                                       services.clock(), purpose=purpose, discoverable=discoverable)


def _register(services: Services, challenge_id: str, credential: object, username: str = "erika", *,
              name: str = "Blue key", purpose: str = ENROLL,
              settings: WebAuthnSettings | None = None) -> WebAuthnCredential | wa.WebAuthnError:
    return _attempt(services, lambda db: wa.register(
        db, settings or services.settings.webauthn, ISSUER, _user(db, username), challenge_id, credential, name,
        services.clock(), purpose=purpose))


def _enroll(services: Services, authenticator: SoftAuthenticator, username: str = "erika", *,
            discoverable: bool = False, name: str = "Blue key", **create: Any) -> WebAuthnCredential:
    challenge_id, options = _reg_options(services, username, discoverable=discoverable)
    result = _register(services, challenge_id, authenticator.create(options, origin=ORIGIN, **create), username,
                       name=name)
    assert isinstance(result, WebAuthnCredential), result
    return result


def _auth_options(services: Services, username: str | None = "erika", *, purpose: str = LOGIN,
                  settings: WebAuthnSettings | None = None) -> tuple[str, dict[str, Any]]:
    with unit_of_work(services.sessions) as db:
        return wa.authentication_options(db, settings or services.settings.webauthn, ISSUER,
                                         _user(db, username) if username else None, services.clock(),
                                         purpose=purpose)


def _authenticate(services: Services, challenge_id: str, credential: object, username: str | None = "erika", *,
                  purpose: str = LOGIN, settings: WebAuthnSettings | None = None,
                  ) -> tuple[WebAuthnCredential, list[str]] | wa.WebAuthnError:
    return _attempt(services, lambda db: wa.authenticate(
        db, settings or services.settings.webauthn, ISSUER, challenge_id, credential, services.clock(),
        purpose=purpose, user=_user(db, username) if username else None))


def _sign_in(services: Services, authenticator: SoftAuthenticator, username: str | None = "erika",
             **get: Any) -> tuple[WebAuthnCredential, list[str]] | wa.WebAuthnError:
    challenge_id, options = _auth_options(services, username)
    return _authenticate(services, challenge_id, authenticator.get(options, origin=ORIGIN, **get), username)


def assert_refused(result: object, reason: str) -> wa.WebAuthnError:
    assert isinstance(result, wa.WebAuthnError), f"expected a refusal ({reason}), got {result!r}"
    assert result.reason == reason, (result.reason, str(result))
    assert str(result) and "Traceback" not in str(result)
    return result


def _stored(services: Services) -> list[WebAuthnCredential]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(WebAuthnCredential).order_by(WebAuthnCredential.id)))


@pytest.fixture
def erika(services: Services) -> Services:
    add_user(services, "erika")
    return services


# --- RP ID and origin -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("issuer", "rp", "origin"), [
    ("https://idp.test", "idp.test", "https://idp.test"),
    ("https://Login.Musterstadt.de:8443/idp", "login.musterstadt.de", "https://login.musterstadt.de:8443"),
    ("https://login.musterstadt.de:443/realm", "login.musterstadt.de", "https://login.musterstadt.de"),
    ("http://localhost:8000", "localhost", "http://localhost:8000"),
])
def test_rp_id_and_origin_come_from_the_issuer(issuer: str, rp: str, origin: str) -> None:
    """The RP ID is the issuer's host; the origin is scheme://host[:port] without a default port (WebAuthn 5.1.3)."""
    assert wa.rp_id(issuer) == rp
    assert wa.expected_origin(issuer) == origin


# --- registration ---------------------------------------------------------------------------------------

def test_registration_stores_the_credential(erika: Services) -> None:
    """A security key registers: id, COSE key, count, AAGUID, transports and flags are stored for its user."""
    key = SoftAuthenticator(aaguid=bytes.fromhex("2fc0579f811347eab116bb5a8db9202a"), transports=("usb", "nfc"))
    challenge_id, options = _reg_options(erika)
    assert options["rp"] == {"id": "idp.test", "name": erika.settings.webauthn.rp_name}
    assert options["attestation"] == "none"
    assert options["authenticatorSelection"]["residentKey"] == "discouraged"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -8, -257]
    assert options["user"]["name"] == "erika" and options["excludeCredentials"] == []
    result = _register(erika, challenge_id, key.create(options, origin=ORIGIN, uv=False), name="  Blue key  ")
    assert isinstance(result, WebAuthnCredential)
    [row] = _stored(erika)
    with unit_of_work(erika.sessions) as db:
        user = _user(db, "erika")
        assert row.user_id == user.id
        assert user.webauthn_handle is not None and len(user.webauthn_handle) == 64
        assert b64url(user.webauthn_handle) == options["user"]["id"]
    assert row.credential_id in key.credentials
    assert row.name == "Blue key" and row.sign_count == 0 and row.flagged_at is None
    assert row.aaguid == "2fc0579f-8113-47ea-b116-bb5a8db9202a"
    assert row.transports == ["usb", "nfc"]
    assert (row.discoverable, row.backup_eligible) == (False, False)
    assert row.public_key and row.last_used_at is None


def test_registration_options_exclude_existing_keys_and_keep_the_user_handle(erika: Services) -> None:
    """A second registration excludes the user's keys (WebAuthn 5.4 excludeCredentials) under the same handle."""
    first = _enroll(erika, SoftAuthenticator())
    _, options = _reg_options(erika, discoverable=True)
    assert [unb64url(c["id"]) for c in options["excludeCredentials"]] == [first.credential_id]
    assert options["excludeCredentials"][0]["transports"] == ["usb"]
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    with unit_of_work(erika.sessions) as db:
        assert b64url(_user(db, "erika").webauthn_handle or b"") == options["user"]["id"]


def test_passkey_registration_is_discoverable_and_synced_passkeys_are_backup_eligible(erika: Services) -> None:
    """A passkey registration is stored as discoverable; a backup-eligible (synced) one is marked as such."""
    row = _enroll(erika, SoftAuthenticator(backup_eligible=True), discoverable=True, name="")
    assert (row.discoverable, row.backup_eligible) == (True, True)
    assert row.name == "Passkey"


def test_passkey_registration_requires_user_verification(erika: Services) -> None:
    """A passkey must verify the user, since it alone signs in: a registration without UV is refused."""
    challenge_id, options = _reg_options(erika, discoverable=True)
    result = _register(erika, challenge_id, SoftAuthenticator().create(options, origin=ORIGIN, uv=False))
    assert_refused(result, "user_not_verified")
    assert _stored(erika) == []


@pytest.mark.parametrize(("create", "reason"), [
    ({"rp_id": "evil.test"}, "wrong_origin_or_rp_id"),
    ({"origin": "https://evil.test"}, "wrong_origin_or_rp_id"),
    ({"origin": "https://idp.test:8443"}, "wrong_origin_or_rp_id"),
    ({"type": "webauthn.get"}, "wrong_ceremony"),
    ({"up": False}, "user_not_present"),
    ({"challenge": b64url(b"0" * 32)}, "invalid_response"),
    ({"rsa_alg": -65535}, "unsupported_algorithm"),
])
def test_registration_refusals(erika: Services, create: dict[str, Any], reason: str) -> None:
    """A registration for another RP ID or origin, of the wrong type, without presence, for another challenge,
    or with an algorithm not offered (RS1) is refused with a message, and nothing is stored."""
    challenge_id, options = _reg_options(erika)
    kwargs = {"origin": ORIGIN, **create}
    result = _register(erika, challenge_id, SoftAuthenticator().create(options, **kwargs))
    assert_refused(result, reason)
    assert _stored(erika) == []


def test_registration_requires_user_verification_where_policy_says(erika: Services) -> None:
    """With user_verification = required the options say so and a registration without UV is refused."""
    strict = _settings(erika, user_verification="required")
    challenge_id, options = _reg_options(erika, settings=strict)
    assert options["authenticatorSelection"]["userVerification"] == "required"
    result = _register(erika, challenge_id, SoftAuthenticator().create(options, origin=ORIGIN, uv=False),
                       settings=strict)
    assert_refused(result, "user_not_verified")
    challenge_id, options = _reg_options(erika, settings=strict)
    assert isinstance(_register(erika, challenge_id, SoftAuthenticator().create(options, origin=ORIGIN),
                                settings=strict), WebAuthnCredential)


@pytest.mark.parametrize("payload", [
    "not json", "[]", {}, {"id": "x", "rawId": "x", "response": {}, "type": "public-key"},
    {"id": "%%%", "rawId": "%%%", "type": "public-key",
     "response": {"clientDataJSON": "%%%", "attestationObject": "%%%"}},
    {"id": "AAAA", "rawId": "AAAA", "type": "public-key",
     "response": {"clientDataJSON": "AAAA", "attestationObject": "AAAA"}},
    None, 42,
])
def test_malformed_registration_is_a_refusal(erika: Services, payload: object) -> None:
    """Malformed JSON, missing fields or garbage bytes give a WebAuthnError, never an unhandled exception."""
    challenge_id, _ = _reg_options(erika)
    result = _register(erika, challenge_id, payload)
    assert isinstance(result, wa.WebAuthnError) and isinstance(result, ValueError)
    assert _stored(erika) == []


def test_registration_challenge_is_single_use(erika: Services) -> None:
    """A challenge is consumed before verification: a replayed registration is refused, even after a failure."""
    key = SoftAuthenticator()
    challenge_id, options = _reg_options(erika)
    assert isinstance(_register(erika, challenge_id, key.create(options, origin=ORIGIN)), WebAuthnCredential)
    assert_refused(_register(erika, challenge_id, key.create(options, origin=ORIGIN)), "replayed_challenge")

    challenge_id, options = _reg_options(erika)
    assert_refused(_register(erika, challenge_id, key.create(options, origin="https://evil.test")),
             "wrong_origin_or_rp_id")
    assert_refused(_register(erika, challenge_id, key.create(options, origin=ORIGIN)), "replayed_challenge")
    assert len(_stored(erika)) == 1
    with unit_of_work(erika.sessions) as db:
        assert db.get(WebAuthnChallenge, challenge_id).consumed_at is not None  # type: ignore[union-attr]


def test_registration_challenge_expires_after_five_minutes(erika: Services, clock: Any) -> None:
    """A registration answered more than 5 minutes after its options is refused."""
    challenge_id, options = _reg_options(erika)
    clock.advance(minutes=5, seconds=1)
    assert_refused(_register(erika, challenge_id, SoftAuthenticator().create(options, origin=ORIGIN)),
                   "expired_challenge")
    assert _stored(erika) == []


def test_registration_challenge_is_bound_to_user_purpose_and_ceremony(erika: Services) -> None:
    """A challenge issued for one user, purpose or ceremony is refused for any other."""
    add_user(erika, "max")
    key = SoftAuthenticator()
    challenge_id, options = _reg_options(erika, "max")
    assert_refused(_register(erika, challenge_id, key.create(options, origin=ORIGIN), "erika"), "foreign_challenge")
    challenge_id, options = _reg_options(erika, purpose="enroll:other")
    assert_refused(_register(erika, challenge_id, key.create(options, origin=ORIGIN)), "foreign_challenge")
    _enroll(erika, key)
    challenge_id, options = _auth_options(erika)
    assert_refused(_register(erika, challenge_id, key.create({**options, "rp": {"id": "idp.test"},
                                                        "user": {"id": b64url(b"u" * 64)}}, origin=ORIGIN)),
             "foreign_challenge")
    assert_refused(_register(erika, "no-such-challenge", key.create(options | {"rp": {"id": "idp.test"},
                                                                          "user": {"id": "AA"}}, origin=ORIGIN)),
             "unknown_challenge")
    assert len(_stored(erika)) == 1


def test_duplicate_credential_id_is_refused_for_anyone(erika: Services) -> None:
    """A credential id registered already (by this user or another) cannot be registered again."""
    add_user(erika, "max")
    first = _enroll(erika, SoftAuthenticator())
    for username in ("erika", "max"):
        challenge_id, options = _reg_options(erika, username)
        attacker = SoftAuthenticator()
        response = attacker.create(options, origin=ORIGIN, credential_id=first.credential_id)
        assert_refused(_register(erika, challenge_id, response, username), "duplicate_credential")
    [row] = _stored(erika)
    assert row.id == first.id and row.public_key == first.public_key


# --- attestation and the AAGUID allow-list --------------------------------------------------------------

ISSUED_AAGUID = "cb69481e-8ff7-4039-93ec-0a2729a154a8"


@pytest.fixture
def vendor(tmp_path: Path) -> tuple[AttestationCA, str]:
    ca = AttestationCA.create(aaguid_extension=bytes.fromhex(ISSUED_AAGUID.replace("-", "")))
    path = tmp_path / "vendor-roots.pem"
    path.write_bytes(ca.root_pem())
    return ca, str(path)


def _allow_list(services: Services, roots: str) -> WebAuthnSettings:
    return _settings(services, allowed_aaguids=(ISSUED_AAGUID.upper(),), attestation_roots=(roots,))


def test_aaguid_allow_list_accepts_a_listed_key_with_verified_attestation(
        erika: Services, vendor: tuple[AttestationCA, str]) -> None:
    """With allowed_aaguids, options ask for direct attestation and a listed model chained to the root registers."""
    ca, roots = vendor
    policy = _allow_list(erika, roots)
    challenge_id, options = _reg_options(erika, settings=policy)
    assert options["attestation"] == "direct"
    key = SoftAuthenticator(aaguid=bytes.fromhex(ISSUED_AAGUID.replace("-", "")))
    result = _register(erika, challenge_id, key.create(options, origin=ORIGIN, fmt="packed", ca=ca),
                       settings=policy)
    assert isinstance(result, WebAuthnCredential), result
    assert result.aaguid == ISSUED_AAGUID


@pytest.mark.parametrize("case", ["none", "self", "unlisted", "foreign_root", "extension_mismatch"])
def test_aaguid_allow_list_refusals(erika: Services, vendor: tuple[AttestationCA, str], case: str) -> None:
    """Under an allow-list a "none" or self attestation (a self-asserted AAGUID), an unlisted model, a chain to
    an unknown root, or a certificate naming another AAGUID than the key claims is refused."""
    ca, roots = vendor
    policy = _allow_list(erika, roots)
    challenge_id, options = _reg_options(erika, settings=policy)
    issued = bytes.fromhex(ISSUED_AAGUID.replace("-", ""))
    other = bytes.fromhex("ee882879721c491397753dfcce97072a")
    key = SoftAuthenticator(aaguid=issued)
    if case == "none":
        response = key.create(options, origin=ORIGIN)
        reason = "attestation_missing"
    elif case == "self":
        response = key.create(options, origin=ORIGIN, fmt="packed", self_attestation=True)
        reason = "attestation_missing"
    elif case == "unlisted":
        unlisted_ca = AttestationCA.create(name="Other Vendor", aaguid_extension=other)
        Path(roots).write_bytes(ca.root_pem() + unlisted_ca.root_pem())
        response = SoftAuthenticator(aaguid=other).create(options, origin=ORIGIN, fmt="packed", ca=unlisted_ca)
        reason = "aaguid_not_allowed"
    elif case == "foreign_root":
        response = key.create(options, origin=ORIGIN, fmt="packed", ca=AttestationCA.create(name="Forger"))
        reason = "invalid_response"
    else:
        response = SoftAuthenticator(aaguid=other).create(options, origin=ORIGIN, fmt="packed", ca=ca)
        reason = "aaguid_mismatch"
    assert_refused(_register(erika, challenge_id, response, settings=policy), reason)
    assert _stored(erika) == []


def test_aaguid_allow_list_without_roots_refuses_to_register(erika: Services, tmp_path: Path) -> None:
    """An allow-list without readable roots would accept any chain, so registration is refused instead."""
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    for roots in ((), (str(empty),), (str(tmp_path / "missing.pem"),)):
        policy = _settings(erika, allowed_aaguids=(ISSUED_AAGUID,), attestation_roots=roots)
        result = _attempt(erika, lambda db, p=policy: wa.registration_options(  # type: ignore[misc]
            db, p, ISSUER, _user(db, "erika"), erika.clock(), purpose=ENROLL, discoverable=False))
        assert_refused(result, "attestation_roots_missing")


# --- authentication -------------------------------------------------------------------------------------

def test_second_step_authentication_succeeds_and_updates_the_key(erika: Services, clock: Any) -> None:
    """An assertion for one of the user's keys is accepted; the sign count and last use are stored; amr hwk."""
    key = SoftAuthenticator()
    row = _enroll(erika, key)
    challenge_id, options = _auth_options(erika)
    assert options["rpId"] == "idp.test" and options["userVerification"] == "preferred"
    assert [unb64url(c["id"]) for c in options["allowCredentials"]] == [row.credential_id]
    clock.advance(seconds=10)
    result = _authenticate(erika, challenge_id, key.get(options, origin=ORIGIN, uv=False))
    assert not isinstance(result, wa.WebAuthnError), result
    credential, amr = result
    assert credential.id == row.id and amr == ["hwk"]
    [stored] = _stored(erika)
    assert stored.sign_count == 1 and stored.last_used_at == clock()
    credential, amr = _sign_in(erika, key)  # type: ignore[misc]
    assert amr == ["hwk", "user"] and _stored(erika)[0].sign_count == 2


def test_synced_passkey_without_counter_gives_swk(erika: Services) -> None:
    """A backup-eligible passkey that always reports count 0 signs in repeatedly, with amr swk (RFC 8176)."""
    key = SoftAuthenticator(backup_eligible=True, counter_step=0)
    _enroll(erika, key, discoverable=True)
    for _ in range(2):
        result = _sign_in(erika, key)
        assert not isinstance(result, wa.WebAuthnError), result
        assert result[1] == ["swk", "user"]
    assert _stored(erika)[0].sign_count == 0


@pytest.mark.parametrize(("get", "reason"), [
    ({"rp_id": "evil.test"}, "wrong_origin_or_rp_id"),
    ({"origin": "https://evil.test"}, "wrong_origin_or_rp_id"),
    ({"origin": "http://idp.test"}, "wrong_origin_or_rp_id"),
    ({"type": "webauthn.create"}, "wrong_ceremony"),
    ({"up": False}, "user_not_present"),
    ({"corrupt_signature": True}, "bad_signature"),
    ({"challenge": b64url(b"1" * 32)}, "invalid_response"),
])
def test_assertion_refusals(erika: Services, get: dict[str, Any], reason: str) -> None:
    """An assertion for another RP ID or origin, of type webauthn.create, without user presence, with a bad
    signature or over another challenge is refused, and the key is neither updated nor flagged."""
    key = SoftAuthenticator()
    _enroll(erika, key)
    challenge_id, options = _auth_options(erika)
    assert_refused(_authenticate(erika, challenge_id, key.get(options, **{"origin": ORIGIN, **get})), reason)
    [stored] = _stored(erika)
    assert stored.sign_count == 0 and stored.last_used_at is None and stored.flagged_at is None


def test_user_verification_required_by_policy(erika: Services) -> None:
    """With user_verification = required the assertion must carry UV; without it, it is refused."""
    strict = _settings(erika, user_verification="required")
    key = SoftAuthenticator()
    _enroll(erika, key)
    challenge_id, options = _auth_options(erika, settings=strict)
    assert options["userVerification"] == "required"
    assert_refused(_authenticate(erika, challenge_id, key.get(options, origin=ORIGIN, uv=False), settings=strict),
             "user_not_verified")
    challenge_id, options = _auth_options(erika, settings=strict)
    result = _authenticate(erika, challenge_id, key.get(options, origin=ORIGIN), settings=strict)
    assert not isinstance(result, wa.WebAuthnError) and result[1] == ["hwk", "user"]


def test_assertion_challenge_is_single_use_and_expires(erika: Services, clock: Any) -> None:
    """An assertion replayed, answered after a failed try, or after 5 minutes is refused."""
    key = SoftAuthenticator()
    _enroll(erika, key)
    challenge_id, options = _auth_options(erika)
    answer = key.get(options, origin=ORIGIN)
    assert not isinstance(_authenticate(erika, challenge_id, answer), wa.WebAuthnError)
    assert_refused(_authenticate(erika, challenge_id, answer), "replayed_challenge")

    challenge_id, options = _auth_options(erika)
    assert_refused(_authenticate(erika, challenge_id, key.get(options, origin=ORIGIN, up=False)), "user_not_present")
    assert_refused(_authenticate(erika, challenge_id, key.get(options, origin=ORIGIN)), "replayed_challenge")

    challenge_id, options = _auth_options(erika)
    clock.advance(minutes=5, seconds=1)
    assert_refused(_authenticate(erika, challenge_id, key.get(options, origin=ORIGIN)), "expired_challenge")
    assert _stored(erika)[0].flagged_at is None


def test_assertion_challenge_is_bound_to_user_and_purpose(erika: Services) -> None:
    """A challenge issued for another user, another login transaction or a registration is refused."""
    add_user(erika, "max")
    key = SoftAuthenticator()
    _enroll(erika, key)
    _enroll(erika, key, "max")
    challenge_id, options = _auth_options(erika, "max")
    assert_refused(_authenticate(erika, challenge_id, key.get(options, origin=ORIGIN), "erika"), "foreign_challenge")
    challenge_id, options = _auth_options(erika, purpose="login:tx-2")
    assert_refused(_authenticate(erika, challenge_id, key.get(options, origin=ORIGIN)), "foreign_challenge")
    challenge_id, options = _auth_options(erika, None)
    assert_refused(_authenticate(erika, challenge_id, key.get(options, origin=ORIGIN, credential_id=next(iter(
        key.credentials)), user_handle=None)), "foreign_challenge")
    reg_id, reg_options = _reg_options(erika)
    assert_refused(_authenticate(erika, reg_id, key.get({"rpId": "idp.test", "challenge": reg_options["challenge"],
                                                   "allowCredentials": options["allowCredentials"] or None},
                                                  origin=ORIGIN, credential_id=next(iter(key.credentials)))),
             "foreign_challenge")


def test_another_users_key_is_refused_in_the_second_step(erika: Services) -> None:
    """In the second step only the signed-in user's keys count: another user's valid key is refused."""
    add_user(erika, "max")
    erika_key, max_key = SoftAuthenticator(), SoftAuthenticator()
    _enroll(erika, erika_key)
    max_row = _enroll(erika, max_key, "max")
    challenge_id, options = _auth_options(erika)
    answer = max_key.get(options, origin=ORIGIN, credential_id=max_row.credential_id)
    assert_refused(_authenticate(erika, challenge_id, answer), "unknown_credential")
    assert _stored(erika)[1].sign_count == 0


def test_authentication_options_without_keys_and_without_flagged_keys(erika: Services) -> None:
    """A user without usable keys gets no options; flagged keys are left out of allowCredentials."""
    assert_refused(_attempt(erika, lambda db: wa.authentication_options(
        db, erika.settings.webauthn, ISSUER, _user(db, "erika"), erika.clock(), purpose=LOGIN)), "no_credentials")
    first, second = _enroll(erika, SoftAuthenticator()), _enroll(erika, SoftAuthenticator())
    with unit_of_work(erika.sessions) as db:
        db.get(WebAuthnCredential, first.id).flagged_at = erika.clock()  # type: ignore[union-attr]
    _, options = _auth_options(erika)
    assert [unb64url(c["id"]) for c in options["allowCredentials"]] == [second.credential_id]


# --- cloned keys ----------------------------------------------------------------------------------------

def test_sign_count_regression_flags_audits_and_blocks_the_key(erika: Services) -> None:
    """A sign count that does not grow (WebAuthn 6.1.1) is refused, the key is flagged and the event audited;
    afterwards the key is refused even with a good count."""
    key = SoftAuthenticator()
    row = _enroll(erika, key)
    for _ in range(3):
        assert not isinstance(_sign_in(erika, key), wa.WebAuthnError)
    assert _stored(erika)[0].sign_count == 3

    assert_refused(_sign_in(erika, key, sign_count=2), "sign_count_regression")
    [stored] = _stored(erika)
    assert stored.flagged_at is not None and stored.sign_count == 3
    with unit_of_work(erika.sessions) as db:
        [event] = db.scalars(select(AuditEvent).where(AuditEvent.event == "webauthn.cloned")).all()
        assert event.outcome == "failure" and event.subject == "erika"
        assert event.details["credential"] == row.id
        assert (event.details["stored_count"], event.details["presented_count"]) == (3, 2)

    with unit_of_work(erika.sessions) as db:
        assert wa.credentials_of(db, _user(db, "erika")) == []
    # The flagged key is no longer offered; sent anyway (options of a second key), it is refused.
    _enroll(erika, SoftAuthenticator())
    challenge_id, options = _auth_options(erika)
    answer = key.get(options, origin=ORIGIN, credential_id=row.credential_id, sign_count=10)
    assert_refused(_authenticate(erika, challenge_id, answer), "flagged_credential")
    with unit_of_work(erika.sessions) as db:
        assert len(db.scalars(select(AuditEvent).where(AuditEvent.event == "webauthn.cloned")).all()) == 1
    assert _stored(erika)[0].sign_count == 3


def test_equal_sign_count_is_a_regression(erika: Services) -> None:
    """A repeated non-zero count is a regression too; a count that drops to 0 after counting is one as well."""
    for presented in (1, 0):
        add_user(erika, f"user{presented}")
        key = SoftAuthenticator()
        _enroll(erika, key, f"user{presented}")
        assert not isinstance(_sign_in(erika, key, f"user{presented}"), wa.WebAuthnError)
        assert_refused(_sign_in(erika, key, f"user{presented}", sign_count=presented), "sign_count_regression")


def test_forged_assertion_with_low_count_does_not_flag_the_key(erika: Services) -> None:
    """The counter is compared only after the signature verifies, so a forger cannot get a key blocked."""
    key = SoftAuthenticator()
    _enroll(erika, key)
    assert not isinstance(_sign_in(erika, key), wa.WebAuthnError)
    assert_refused(_sign_in(erika, key, sign_count=0, corrupt_signature=True), "bad_signature")
    [stored] = _stored(erika)
    assert stored.flagged_at is None and stored.sign_count == 1
    assert not isinstance(_sign_in(erika, key), wa.WebAuthnError)


# --- passkey sign-in ------------------------------------------------------------------------------------

def test_passkey_sign_in_with_matching_user_handle(erika: Services) -> None:
    """Without a username, options have no allowCredentials and require UV; the owner signs in with amr user."""
    key = SoftAuthenticator()
    row = _enroll(erika, key, discoverable=True)
    challenge_id, options = _auth_options(erika, None)
    assert options["allowCredentials"] == [] and options["userVerification"] == "required"
    result = _authenticate(erika, challenge_id, key.get(options, origin=ORIGIN), None)
    assert not isinstance(result, wa.WebAuthnError), result
    credential, amr = result
    assert credential.id == row.id and amr == ["hwk", "user"]
    with unit_of_work(erika.sessions) as db:
        assert credential.user_id == _user(db, "erika").id


@pytest.mark.parametrize("handle", ["other_user", "random", "missing"])
def test_passkey_sign_in_refuses_a_wrong_or_missing_user_handle(erika: Services, handle: str) -> None:
    """For passkey sign-in the returned userHandle must be the owner's handle (WebAuthn 7.2 step 6)."""
    add_user(erika, "max")
    key = SoftAuthenticator()
    _enroll(erika, key, discoverable=True)
    _enroll(erika, SoftAuthenticator(), "max", discoverable=True)
    with unit_of_work(erika.sessions) as db:
        max_handle = _user(db, "max").webauthn_handle
    value = {"other_user": max_handle, "random": b"r" * 64, "missing": None}[handle]
    challenge_id, options = _auth_options(erika, None)
    result = _authenticate(erika, challenge_id, key.get(options, origin=ORIGIN, user_handle=value), None)
    assert_refused(result, "user_handle_missing" if handle == "missing" else "user_handle_mismatch")
    assert _stored(erika)[0].sign_count == 0


def test_passkey_sign_in_requires_user_verification(erika: Services) -> None:
    """A passkey alone signs in, so an assertion without UV is refused even where policy says preferred."""
    key = SoftAuthenticator()
    _enroll(erika, key, discoverable=True)
    challenge_id, options = _auth_options(erika, None)
    assert_refused(_authenticate(erika, challenge_id, key.get(options, origin=ORIGIN, uv=False), None),
                   "user_not_verified")


def test_unknown_credential_is_refused(erika: Services) -> None:
    """A passkey the server does not know is refused."""
    _enroll(erika, SoftAuthenticator())
    stranger = SoftAuthenticator()
    stranger.create({"rp": {"id": "idp.test"}, "user": {"id": b64url(b"x" * 64)},
                     "authenticatorSelection": {"residentKey": "required"}, "challenge": "AA"}, origin=ORIGIN)
    challenge_id, options = _auth_options(erika, None)
    assert_refused(_authenticate(erika, challenge_id, stranger.get(options, origin=ORIGIN), None), "unknown_credential")


@pytest.mark.parametrize("payload", ["{", {}, {"id": "AA", "rawId": "AA", "type": "public-key", "response": {
    "clientDataJSON": "%%", "authenticatorData": "AA", "signature": "AA"}}, [1], None])
def test_malformed_assertion_is_a_refusal(erika: Services, payload: object) -> None:
    """Malformed assertions give a WebAuthnError, never an unhandled exception."""
    _enroll(erika, SoftAuthenticator())
    challenge_id, _ = _auth_options(erika)
    assert isinstance(_authenticate(erika, challenge_id, payload), wa.WebAuthnError)


def test_garbage_in_a_known_credentials_assertion_is_a_refusal(erika: Services) -> None:
    """Broken authenticator data or client data for a registered key is refused, not a server error."""
    key = SoftAuthenticator()
    _enroll(erika, key)
    challenge_id, options = _auth_options(erika)
    answer = key.get(options, origin=ORIGIN)
    answer["response"]["authenticatorData"] = b64url(b"short")
    assert_refused(_authenticate(erika, challenge_id, answer), "invalid_response")
    challenge_id, options = _auth_options(erika)
    answer = key.get(options, origin=ORIGIN)
    answer["response"]["clientDataJSON"] = b64url(b"{not json")
    assert_refused(_authenticate(erika, challenge_id, answer), "invalid_response")


# --- account helpers ------------------------------------------------------------------------------------

def test_rename_and_remove_only_touch_the_users_own_keys(erika: Services) -> None:
    """rename/remove act on the user's own credential and report False for anyone else's."""
    add_user(erika, "max")
    row = _enroll(erika, SoftAuthenticator())
    with unit_of_work(erika.sessions) as db:
        assert not wa.rename(db, _user(db, "max"), row.id, "Mine now")
        assert not wa.remove(db, _user(db, "max"), row.id)
        assert not wa.rename(db, _user(db, "erika"), row.id, "   ")
        assert wa.rename(db, _user(db, "erika"), row.id, "Office key")
    assert _stored(erika)[0].name == "Office key"
    with unit_of_work(erika.sessions) as db:
        assert wa.remove(db, _user(db, "erika"), row.id)
    assert _stored(erika) == []
