"""``idp sync ldap``: dry-run difference, summary, progress bar and exit status (issue 4, §3 and §5)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from directory_sync.cli import ProgressBar
from idp.cli import main
from idp.services import Services
from tests.conftest import ISSUER
from tests.directory.slapd import Directory, free_port
from tests.directory.support import sync, toml_sources, usernames


def write_config(path: Path, sources: list[dict[str, Any]]) -> Path:
    path.write_text(toml_sources(sources), encoding="utf-8")
    return path


@pytest.fixture
def run_cli(services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> Any:
    """``idp`` with the test's database and a configuration file naming the given sources."""
    environ = {"IDP_ISSUER": ISSUER, "IDP_DATA_DIR": str(tmp_path), "IDP_DATABASE_URL": services.settings.database_url,
               "IDP_SECRET_KEY": services.settings.secret_key or "", "IDP_KEYS_ENCRYPTION_KEY":
               services.settings.keys.encryption_key or "", "IDP_DIRECTORY_SCHEDULE": "false"}
    for name in list(os.environ):
        if name.startswith("IDP_"):  # IDP_TEST_BACKENDS and the like are not settings
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    def run(sources: list[dict[str, Any]], *args: str, command: str = "ldap") -> tuple[int, str, str]:
        monkeypatch.setenv("IDP_CONFIG", str(write_config(tmp_path / "idp.toml", sources)))
        status = main(["sync", command, *args])
        captured = capsys.readouterr()
        if status == 1 and "idp:" in captured.err and not captured.out:
            print(captured.err)  # a configuration problem: shown when an assertion fails
        return status, captured.out, captured.err

    return run


def test_dry_run_prints_the_difference_and_writes_nothing(run_cli: Any, services: Services,
                                                          directory: Directory) -> None:
    """--dry-run lists every change it would make, exits 0 and creates nothing."""
    status, out, _ = run_cli([directory.source()], "--dry-run")
    assert status == 0
    assert "+ create   jürgen.gross  Jürgen Groß <juergen.gross@stadt.example>" in out
    assert "+ group    Bauamt-Leitung" in out and "+ member   Bauamt-Leitung: jürgen.gross" in out
    assert "dry run, nothing written: 13 created" in out
    assert usernames(services) == set()


def test_sync_prints_a_summary_and_json(run_cli: Any, services: Services, directory: Directory) -> None:
    """A run prints created, updated, disabled, unchanged, errors and duration; --json prints the same as data."""
    status, out, _ = run_cli([directory.source()])
    assert status == 0
    assert "rathaus (full, ldap://" in out and "done: 13 created, 0 updated, 0 disabled" in out
    assert " 0 errors;" in out and out.rstrip().endswith(" s")
    directory.set_user("tobias.koch", mail="tobias.koch@ordnungsamt.stadt.example")
    status, out, _ = run_cli([directory.source()], "--json")
    assert status == 0
    result = json.loads(out)
    assert (result["mode"], result["status"], result["updated"], result["unchanged"]) == (
        "incremental", "success", 1, 12)
    status, out, _ = run_cli([directory.source()], "--full")
    assert status == 0 and "(full, " in out


def test_refused_run_exits_3_and_force_applies_it(run_cli: Any, services: Services, directory: Directory) -> None:
    """The safety guard's refusal is an exit status of its own (3), with the reason on stderr."""
    assert sync(services).status == "success"
    for username in ("hans.meier", "anna.weiß", "lena.fuß"):
        directory.disable(username)
    status, out, err = run_cli([directory.source()])
    assert status == 3 and "REFUSED" in out and "nothing was changed" in err
    assert usernames(services, active=False) == set()
    status, _, err = run_cli([directory.source()], "--force")
    assert status == 0 and "forced past the safety guard" in err
    assert usernames(services, active=False) == {"hans.meier", "anna.weiss", "lena.fuss"}


def test_unreachable_directory_exits_1(run_cli: Any, services: Services, directory: Directory) -> None:
    """A failed run exits 1 and says why; nothing is created."""
    status, out, err = run_cli([directory.source(url=f"ldap://127.0.0.1:{free_port()}")])
    assert status == 1 and "FAILED" in out and "cannot be reached" in err
    assert usernames(services) == set()


def test_source_selection(run_cli: Any, services: Services, directory: Directory) -> None:
    """--source runs one source; an unknown name exits 1 naming the configured ones."""
    sources = [directory.source(), directory.source(name="schulen", url=f"ldap://127.0.0.1:{free_port()}")]
    status, out, _ = run_cli(sources, "--source", "rathaus")
    assert status == 0 and "schulen" not in out
    status, out, _ = run_cli(sources)
    assert status == 1 and "rathaus (incremental" in out and "schulen (full" in out
    status, _, err = run_cli(sources, "--source", "kita")
    assert status == 1 and "no directory source named 'kita'" in err and "rathaus, schulen" in err


def test_configuration_errors_name_the_key(run_cli: Any, directory: Directory) -> None:
    """A typo in a source table stops the command with a message naming the key."""
    status, _, err = run_cli([{**directory.source(), "user_filtr": "(uid=*)"}])
    assert status == 1 and "source 'rathaus': unknown key user_filtr" in err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(services: Services, directory: Directory) -> None:
    """On a terminal, a run draws its phases with counts and the applying step as a bar; the line is cleared
    at the end."""
    terminal = Terminal()
    bar = ProgressBar(terminal, enabled=True, delay=0)
    assert sync(services, progress=bar).status == "success"
    bar.close()
    text = terminal.getvalue()
    assert "reading accounts" in text and "reading groups" in text
    assert "applying" in text and "[" in text and "%" in text
    assert text.endswith("\r")
    quiet = io.StringIO()
    silent = ProgressBar(quiet, enabled=False)
    silent.phase("reading accounts")
    silent.close()
    assert quiet.getvalue() == ""


def test_history_lists_the_runs(run_cli: Any, services: Services, directory: Directory) -> None:
    """``idp sync history`` shows the latest runs, newest first, with why a run changed nothing."""
    run_cli([directory.source()])
    run_cli([directory.source(url=f"ldap://127.0.0.1:{free_port()}")])
    status, out, _ = run_cli([directory.source()], command="history")
    assert status == 0
    failed, done = out.strip().splitlines()
    assert "failed" in failed and "cannot be reached" in failed
    assert "success" in done and "+13" in done
    status, out, _ = run_cli([directory.source()], "--json", "--limit", "1", command="history")
    [row] = json.loads(out)
    assert (row["status"], row["trigger"], row["source"]) == ("failed", "cli", "rathaus")
