"""Runs ``idp ARGS`` in this process on the test's services (database, keys and clock), for the console's CLI
tests (``idp users disable/enable/unlock``, ``idp roles``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from idp import cli
from idp.db import unit_of_work
from idp.models import AuditEvent
from idp.services import Services


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    services: Services
    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch

    def __call__(self, *args: str) -> Result:
        self.monkeypatch.setattr(cli.common, "services", lambda: self.services)
        code = cli.main(list(args))
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.code == 0, result.err
        return json.loads(result.out)


def audit_events(services: Services, name: str) -> list[AuditEvent]:
    with unit_of_work(services.sessions) as db:
        rows = list(db.scalars(select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)))
        db.expunge_all()
        return rows
