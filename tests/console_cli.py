"""Runs ``idp ARGS`` in this process for the CLI tests: on the test's services (database, keys and clock) or on
the environment's, with the standard input the test gives."""

from __future__ import annotations

import io
import json
import sys
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
    """Runs ``idp ARGS`` in this process and returns what it printed: on ``services`` (the test's database, keys
    and clock) when given, else on the services the command builds from the environment, as in production;
    ``stdin`` is what the command reads from its standard input."""

    services: Services | None
    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch

    def __call__(self, *args: str, stdin: str = "") -> Result:
        if self.services is not None:
            services = self.services
            self.monkeypatch.setattr(cli.common, "services", lambda: services)
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = cli.main(list(args))
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def json(self, *args: str, stdin: str = "") -> Any:
        result = self(*args, "--json", stdin=stdin)
        assert result.code == 0, result.err
        return json.loads(result.out)


def audit_events(services: Services, name: str) -> list[AuditEvent]:
    with unit_of_work(services.sessions) as db:
        rows = list(db.scalars(select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)))
        db.expunge_all()
        return rows
