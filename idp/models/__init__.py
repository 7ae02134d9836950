"""SQLAlchemy models, one module per domain; importing this package registers every table."""

from idp.models.accounts import Group, GroupMember, RoleGrant, User
from idp.models.audit import AuditEvent
from idp.models.clients import Client, ClientOwner, InitialAccessToken, OwnerRedirectDomain
from idp.models.directory import DirectoryAccount, DirectoryGroup, DirectorySyncRun, DirectorySyncState
from idp.models.factors import (
    RecoveryCode,
    SmsChallenge,
    SmsFactor,
    TotpFactor,
    TrustedDevice,
    WebAuthnChallenge,
    WebAuthnCredential,
)
from idp.models.grants import AuthorizationCode, Consent, Token, UsedAssertion
from idp.models.keys import SigningKey
from idp.models.logout import BackchannelDelivery
from idp.models.sessions import LoginTransaction, SessionClient, SsoSession
from idp.models.throttle import AttemptCounter

__all__ = [
    "AttemptCounter",
    "AuditEvent",
    "AuthorizationCode",
    "BackchannelDelivery",
    "Client",
    "ClientOwner",
    "Consent",
    "DirectoryAccount",
    "DirectoryGroup",
    "DirectorySyncRun",
    "DirectorySyncState",
    "Group",
    "InitialAccessToken",
    "GroupMember",
    "LoginTransaction",
    "OwnerRedirectDomain",
    "RecoveryCode",
    "RoleGrant",
    "SessionClient",
    "SigningKey",
    "SmsChallenge",
    "SmsFactor",
    "SsoSession",
    "Token",
    "TotpFactor",
    "TrustedDevice",
    "UsedAssertion",
    "User",
    "WebAuthnChallenge",
    "WebAuthnCredential",
]
