"""Property-based tests of the WebAuthn ceremonies with hostile credentials (issue 7, Tests).

Each example runs the ceremony as the page's script does (options, then verify with a valid CSRF token and a
live challenge), with a response from the soft authenticator that is then broken: a field replaced by another
JSON type, base64 that is not, bytes flipped or cut, CBOR that is no attestation, huge values. The answer is a
JSON refusal (or success for the unbroken one), never a 500 or a trace; a refused registration stores no key.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select
from starlette.testclient import TestClient

from idp.db import unit_of_work
from idp.models import AttemptCounter, WebAuthnCredential
from idp.services import Services
from tests.conftest import ISSUER
from tests.fuzz.hostile import NASTY, assert_safe, hostile_text
from tests.fuzz.world import open_session, session_token
from tests.helpers import Flow, add_client, add_user, csrf_of
from tests.soft_authenticator import SoftAuthenticator

FUZZ = settings.get_profile("idp-fuzz")
JSON_CALL = {"accept": "application/json", "content-type": "application/json"}

json_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), hostile_text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(hostile_text, inner, max_size=3)),
    max_leaves=6)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@st.composite
def broken(draw: st.DrawFn, credential: dict[str, Any]) -> Any:
    """``credential`` with a few things broken, each somewhere in its nested fields."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)  # not a credential at all
    data: dict[str, Any] = json.loads(json.dumps(credential))
    for _ in range(draw(st.integers(0, 3))):
        inner = data.get("response")
        target = inner if isinstance(inner, dict) and draw(st.booleans()) else data
        key = draw(st.sampled_from(sorted(target) + ["extra"]))
        how = draw(st.sampled_from(["json", "text", "flip", "cut", "drop", "cbor"]))
        value = target.get(key)
        if how == "json":
            target[key] = draw(json_values)
        elif how == "text":
            target[key] = draw(st.sampled_from(NASTY))
        elif how == "drop":
            target.pop(key, None)
        elif isinstance(value, str) and how in ("flip", "cut"):
            try:
                raw = bytearray(_unb64(value))
            except ValueError:
                continue
            # Positions drawn independently of the length (an ECDSA signature's varies), taken modulo it, so that
            # Hypothesis can replay an example against a new, equally valid response.
            position = draw(st.integers(0, 2**16))
            if raw and how == "flip":
                raw[position % len(raw)] ^= draw(st.integers(1, 255))
            elif raw:
                raw = raw[: position % len(raw)]
            target[key] = _b64(bytes(raw))
        elif how == "cbor":
            target[key] = _b64(cbor2.dumps(draw(st.one_of(
                st.dictionaries(st.sampled_from(["fmt", "attStmt", "authData", "x"]), json_values, max_size=3),
                json_values))))
    return data


def _keys(services: Services) -> int:
    with unit_of_work(services.sessions) as db:
        return int(db.scalar(select(func.count()).select_from(WebAuthnCredential)) or 0)


def test_security_key_registration_refuses_broken_credentials(client: TestClient, services: Services) -> None:
    """POST /account/webauthn/verify after the options, with a broken attestation response: a JSON refusal and
    no key stored; never a 500 or a trace."""
    add_user(services)
    cookie = open_session(services, client, "erika", second_factor=False)
    token = session_token(services, "account", cookie)
    authenticator = SoftAuthenticator()

    @FUZZ
    @given(data=st.data(), name=st.one_of(hostile_text, json_values))
    def prop(data: st.DataObject, name: Any) -> None:
        if _keys(services) >= 10:
            # The unbroken responses register keys; an account holds at most 20: start again from none.
            with unit_of_work(services.sessions) as db:
                db.execute(delete(WebAuthnCredential))
        options = client.post("/account/webauthn/options", content=json.dumps({"csrf_token": token}), headers=JSON_CALL)
        assert options.status_code == 200, options.text
        challenge = options.json()
        credential = authenticator.create(challenge["publicKey"], origin=ISSUER)
        body = {"csrf_token": token, "challenge_id": challenge["challenge_id"], "name": name,
                "credential": data.draw(broken(credential))}
        before = _keys(services)
        response = client.post("/account/webauthn/verify", content=json.dumps(body), headers=JSON_CALL)
        assert_safe(response, repr(body)[:2000])
        assert response.headers["content-type"].startswith("application/json"), response.text
        if response.status_code != 200 or "error" in response.json():
            assert _keys(services) == before, f"a refused registration stored a key\n{body!r}"

    prop()


def test_passkey_sign_in_refuses_broken_assertions(client: TestClient, services: Services) -> None:
    """POST /login/{tx}/passkey/verify after the options, with a broken assertion of a registered passkey: a JSON
    refusal (or the sign-in for the unbroken one); never a 500 or a trace."""
    add_user(services)
    web = add_client(services)
    authenticator = SoftAuthenticator()
    cookie = open_session(services, client, "erika", second_factor=False)
    token = session_token(services, "account", cookie)
    options = client.post("/account/webauthn/options?kind=passkey", content=json.dumps({"csrf_token": token}),
                          headers=JSON_CALL).json()
    credential = authenticator.create(options["publicKey"], origin=ISSUER)
    registered = client.post("/account/webauthn/verify", headers=JSON_CALL, content=json.dumps(
        {"csrf_token": token, "challenge_id": options["challenge_id"], "credential": credential, "name": "Key"}))
    assert registered.status_code == 200 and "error" not in registered.json(), registered.text
    browser = TestClient(client.app, base_url=ISSUER, follow_redirects=False)

    @FUZZ
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        with unit_of_work(services.sessions) as db:
            # Passkey options are throttled per address (all examples come from one): reset the counters.
            db.execute(delete(AttemptCounter))
        browser.cookies.clear()
        login = browser.get(Flow(web).url()).headers["location"]
        page = browser.get(login)
        csrf_token = csrf_of(page.text)
        first = browser.post(f"{login}/passkey/options", content=json.dumps({"csrf_token": csrf_token}),
                             headers=JSON_CALL)
        assert first.status_code == 200, first.text
        challenge = first.json()
        assertion = authenticator.get(challenge["publicKey"], origin=ISSUER)
        body = {"csrf_token": csrf_token, "challenge_id": challenge["challenge_id"],
                "credential": data.draw(broken(assertion))}
        response = browser.post(f"{login}/passkey/verify", content=json.dumps(body), headers=JSON_CALL)
        assert_safe(response, repr(body)[:2000])
        assert response.headers["content-type"].startswith("application/json"), response.text

    prop()
