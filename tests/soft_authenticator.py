"""A software FIDO2 authenticator for tests: EC P-256 keys, CBOR by hand, answers as browsers send them.

It takes the JSON options our server hands to ``navigator.credentials.create/get`` and returns what
``PublicKeyCredential.toJSON()`` gives (base64url fields), so tests drive the real verification code with
real signatures. Every field a browser or an authenticator sets can be overridden to build attacks: another
RP ID or origin, the wrong ceremony type, missing user presence or verification, a lower sign count.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _cose_ec2(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})


def _cose_rsa(key: rsa.RSAPrivateKey, alg: int) -> bytes:
    numbers = key.public_key().public_numbers()
    return cbor2.dumps({1: 3, 3: alg, -1: numbers.n.to_bytes(256, "big"), -2: numbers.e.to_bytes(3, "big")})


@dataclass
class AttestationCA:
    """A vendor's attestation root and one batch certificate signed by it (for ``packed`` attestation)."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate

    @classmethod
    def create(cls, *, name: str = "Test Vendor", aaguid_extension: bytes | None = None) -> AttestationCA:
        now = datetime.datetime.now(datetime.UTC)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Root CA")])
        root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
                .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(root_key, hashes.SHA256()))
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([
                       x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                       x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                       x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
                       x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Batch 1")]))
                   .issuer_name(root_name).public_key(leaf_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if aaguid_extension is not None:
            builder = builder.add_extension(x509.UnrecognizedExtension(
                x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4"), b"\x04\x10" + aaguid_extension), critical=False)
        leaf = builder.sign(root_key, hashes.SHA256())
        return cls(root_key, root, leaf_key, leaf)

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)


@dataclass
class SoftCredential:
    credential_id: bytes
    key: Any
    rp_id: str
    user_handle: bytes | None
    resident: bool
    sign_count: int = 0


@dataclass
class SoftAuthenticator:
    """One authenticator (a security key, or a phone with synced passkeys when ``backup_eligible``)."""

    aaguid: bytes = field(default_factory=lambda: bytes(16))
    backup_eligible: bool = False
    counter_step: int = 1
    """How much the sign count grows per use; 0 for authenticators that keep no counter (synced passkeys)."""
    transports: tuple[str, ...] = ("usb",)
    credentials: dict[bytes, SoftCredential] = field(default_factory=dict)

    # --- navigator.credentials.create() -----------------------------------------------------------------
    def create(self, options: dict[str, Any], *, origin: str, rp_id: str | None = None,
               type: str = "webauthn.create", challenge: str | None = None, up: bool = True, uv: bool = True,
               resident: bool | None = None, fmt: str = "none", ca: AttestationCA | None = None,
               self_attestation: bool = False, credential_id: bytes | None = None,
               rsa_alg: int | None = None) -> dict[str, Any]:
        rp = rp_id or options["rp"]["id"]
        if rsa_alg is not None:
            key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            cose = _cose_rsa(key, rsa_alg)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            cose = _cose_ec2(key)
        cred_id = credential_id or secrets.token_bytes(32)
        if resident is None:
            resident = options.get("authenticatorSelection", {}).get("residentKey") == "required"
        handle = unb64url(options["user"]["id"])
        credential = SoftCredential(cred_id, key, rp, handle if resident else None, resident)
        self.credentials[cred_id] = credential
        flags = (UP if up else 0) | (UV if uv else 0) | AT | ((BE | BS) if self.backup_eligible else 0)
        auth_data = (hashlib.sha256(rp.encode()).digest() + bytes([flags]) + struct.pack(">I", 0)
                     + self.aaguid + struct.pack(">H", len(cred_id)) + cred_id + cose)
        client_data = json.dumps({"type": type, "challenge": challenge or options["challenge"],
                                  "origin": origin, "crossOrigin": False}).encode()
        to_sign = auth_data + hashlib.sha256(client_data).digest()
        statement: dict[str, Any] = {}
        if fmt == "packed" and self_attestation:
            statement = {"alg": -7, "sig": key.sign(to_sign, ec.ECDSA(hashes.SHA256()))}
        elif fmt == "packed":
            assert ca is not None
            statement = {"alg": -7, "sig": ca.leaf_key.sign(to_sign, ec.ECDSA(hashes.SHA256())),
                         "x5c": [ca.leaf.public_bytes(serialization.Encoding.DER)]}
        attestation = cbor2.dumps({"fmt": fmt, "attStmt": statement, "authData": auth_data})
        return {
            "id": b64url(cred_id),
            "rawId": b64url(cred_id),
            "type": "public-key",
            "response": {"clientDataJSON": b64url(client_data), "attestationObject": b64url(attestation),
                         "transports": list(self.transports)},
            "clientExtensionResults": {},
            "authenticatorAttachment": "cross-platform",
        }

    # --- navigator.credentials.get() --------------------------------------------------------------------
    def get(self, options: dict[str, Any], *, origin: str, rp_id: str | None = None, type: str = "webauthn.get",
            challenge: str | None = None, up: bool = True, uv: bool = True, credential_id: bytes | None = None,
            sign_count: int | None = None, user_handle: bytes | None | str = "stored",
            corrupt_signature: bool = False) -> dict[str, Any]:
        rp = rp_id or options["rpId"]
        if credential_id is None:
            allowed = [unb64url(c["id"]) for c in options.get("allowCredentials") or []]
            candidates = [c for c in self.credentials.values() if c.rp_id == options["rpId"]
                          and (c.credential_id in allowed if allowed else c.resident)]
            assert candidates, "the authenticator has no credential for these options"
            credential_id = candidates[0].credential_id
        credential = self.credentials[credential_id]
        if sign_count is None:
            credential.sign_count += self.counter_step
            sign_count = credential.sign_count
        flags = (UP if up else 0) | (UV if uv else 0) | ((BE | BS) if self.backup_eligible else 0)
        auth_data = hashlib.sha256(rp.encode()).digest() + bytes([flags]) + struct.pack(">I", sign_count)
        client_data = json.dumps({"type": type, "challenge": challenge or options["challenge"],
                                  "origin": origin, "crossOrigin": False}).encode()
        to_sign = auth_data + hashlib.sha256(client_data).digest()
        if isinstance(credential.key, rsa.RSAPrivateKey):
            raise AssertionError("assertions are only made with EC keys here")
        signature = credential.key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        if corrupt_signature:
            other = ec.generate_private_key(ec.SECP256R1())
            signature = other.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        handle = credential.user_handle if user_handle == "stored" else user_handle
        assert not isinstance(handle, str)
        return {
            "id": b64url(credential_id),
            "rawId": b64url(credential_id),
            "type": "public-key",
            "response": {"clientDataJSON": b64url(client_data), "authenticatorData": b64url(auth_data),
                         "signature": b64url(signature), "userHandle": b64url(handle) if handle else None},
            "clientExtensionResults": {},
            "authenticatorAttachment": "cross-platform",
        }
