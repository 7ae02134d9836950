"""What every ``idp`` subcommand shares: the error it raises and how it builds the services."""

from __future__ import annotations

from sqlalchemy.orm import Session

from idp.accounts.users import find_user
from idp.config import load_settings
from idp.models import User
from idp.services import Services, build_services


class CommandError(Exception):
    """A command cannot do what was asked; the message is shown to the operator."""


def services() -> Services:
    """The services of one command run, from the configuration (tests replace this function)."""
    return build_services(load_settings())


def user_or_fail(db: Session, username: str) -> User:
    user = find_user(db, username)
    if user is None:
        raise CommandError(f"no user {username!r}")
    return user
