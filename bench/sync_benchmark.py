"""Benchmark of the directory sync: 10,000 users and 500 groups in a real slapd.

Measures a full sync into an empty database, an incremental run after 100 changes in the directory, and an
incremental run with nothing changed; for each: duration, users per second and the peak memory (RSS) of the
process that ran it. Each run happens in a fresh child process, so that its peak memory is its own.

    .venv/bin/python bench/sync_benchmark.py                      # SQLite (the embedded default)
    .venv/bin/python bench/sync_benchmark.py --postgresql         # also PostgreSQL on 127.0.0.1:5432
    .venv/bin/python bench/sync_benchmark.py --users 2000 --groups 100

Goals on the 2-core test machine: full sync within 15 s, incremental within 1 s. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.directory.slapd import (  # noqa: E402  (after the path set-up above)
    OPENLDAP_SUFFIX,
    ROOT_DN,
    ROOT_PASSWORD,
    SYNC_DN,
    SYNC_PASSWORD,
    USER_PASSWORD,
    Slapd,
    ascii_mail,
)

GIVEN = ["Jürgen", "Erika", "Hans", "Petra", "Björn", "Anna", "Özlem", "Klaus", "Maria", "Günther", "Stefan",
         "Lena", "Tobias", "Sören", "Jörg", "Käthe", "Uwe", "Ingrid", "Dörte", "Mehmet"]
FAMILY = ["Groß", "Mustermann", "Meier", "Schäfer", "Öhler", "Weiß", "Yılmaz", "Straßburger", "Müller", "Kühn",
          "Bäcker", "Fuß", "Koch", "Schröder", "Böhm", "Krüger", "Jäger", "Löffler", "Weißmüller", "Hoß"]
DEPARTMENTS = ["Bauamt", "Bürgeramt", "Kämmerei", "Ordnungsamt", "Jugendamt", "Sozialamt", "Standesamt",
               "Grünflächenamt", "Schulamt", "Stadtkasse", "Personalamt", "Hauptamt", "Kulturamt", "Sportamt",
               "Umweltamt", "Stadtplanung", "Tiefbauamt", "Feuerwehr", "Bibliothek", "Musikschule"]


def write_ldif(path: Path, base: str, users: int, groups: int, rng: random.Random) -> list[str]:
    """The directory as LDIF (UTF-8 values are written base64-encoded, as LDIF requires for non-ASCII)."""
    import base64

    def line(name: str, value: str) -> str:
        if value.isascii() and not value.startswith((" ", ":", "<")):
            return f"{name}: {value}\n"
        return f"{name}:: {base64.b64encode(value.encode()).decode()}\n"

    dns: list[str] = []
    chunks = [f"dn: {base}\nobjectClass: organizationalUnit\nou: bench\n\n"]
    for department in DEPARTMENTS + ["Gruppen"]:
        chunks.append(line("dn", f"ou={department},{base}") + "objectClass: organizationalUnit\n"
                      + line("ou", department) + "\n")
    for number in range(users):
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        department = DEPARTMENTS[number % len(DEPARTMENTS)]
        uid = f"{given}.{family}.{number}".lower()
        dn = f"uid={uid},ou={department},{base}"
        dns.append(dn)
        chunks.append(line("dn", dn) + "objectClass: inetOrgPerson\n" + line("uid", uid)
                      + line("cn", f"{given} {family}") + line("givenName", given) + line("sn", family)
                      + line("displayName", f"{given} {family}") + line("mail", f"{ascii_mail(uid)}@stadt.example")
                      + f"mobile: +49 151 {number:07d}\n" + f"userPassword: {USER_PASSWORD}\n\n")
    group_dns: list[str] = []
    for number in range(groups):
        if number < len(DEPARTMENTS):
            name = DEPARTMENTS[number]
            members = [dn for i, dn in enumerate(dns) if i % len(DEPARTMENTS) == number]
        else:
            name = f"Projekt {number:03d} Öffentlichkeitsarbeit"
            members = rng.sample(dns, min(20, len(dns)))
            if number % 10 == 0 and group_dns:
                members.append(rng.choice(group_dns))  # nested groups
        dn = f"cn={name},ou=Gruppen,{base}"
        group_dns.append(dn)
        chunks.append(line("dn", dn) + "objectClass: groupOfNames\n" + line("cn", name)
                      + "".join(line("member", member) for member in members) + "\n")
    path.write_text("".join(chunks), encoding="utf-8")
    return dns


def child(args: argparse.Namespace) -> None:
    """Run one sync in this (fresh) process and print its figures as JSON."""
    from directory_sync.engine import run_sync
    from idp import migrate
    from idp.config import load_settings
    from idp.db import create_db_engine
    from idp.services import build_services

    settings = load_settings(environ=json.loads(args.env))
    engine = create_db_engine(settings.database_url)
    migrate.upgrade(engine)
    services = build_services(settings, engine=engine)
    source = settings.directory.sources[0]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    report = run_sync(services, source, full=args.mode == "full")
    duration = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"status": report.status, "mode": report.mode, "duration": duration, "message": report.message,
                      "created": report.created, "updated": report.updated, "disabled": report.disabled,
                      "unchanged": report.unchanged, "memberships": report.memberships_changed,
                      "errors": len(report.errors), "peak_rss_mb": peak / 1024, "rss_before_mb": before / 1024}))


def run_child(mode: str, env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run([sys.executable, __file__, "--child", mode, "--env", json.dumps(env)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the {mode} run failed:\n{result.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if figures["status"] != "success":
        raise SystemExit(f"the {mode} run did not succeed: {figures}")
    return figures


def change_100(slapd: Slapd, dns: list[str], rng: random.Random, base: str, used: set[int]) -> None:
    """100 changes to users not changed before: 80 new mail addresses and names, 10 moves to another
    department, 5 disables (ppolicy lock) and 5 users added to a group. ``dns`` follows the moves."""
    from ldap3 import MODIFY_ADD, MODIFY_REPLACE

    conn = slapd.admin("openldap")
    picked = rng.sample([i for i in range(len(dns)) if i not in used], 100)
    used.update(picked)
    for i in picked[:80]:
        conn.modify(dns[i], {"mail": [(MODIFY_REPLACE, [f"neu.{uuid.uuid4().hex[:8]}@stadt.example"])],
                             "displayName": [(MODIFY_REPLACE, ["Geändert Müller"])]})
    for i in picked[80:90]:
        rdn = dns[i].split(",", 1)[0]
        conn.modify_dn(dns[i], rdn, new_superior=f"ou=Bibliothek,{base}")
        dns[i] = f"{rdn},ou=Bibliothek,{base}"
    for i in picked[90:95]:
        conn.modify(dns[i], {"pwdAccountLockedTime": [(MODIFY_REPLACE, ["000001010000Z"])]})
    group = f"cn=Projekt 100 Öffentlichkeitsarbeit,ou=Gruppen,{base}"
    for i in picked[95:]:
        conn.modify(group, {"member": [(MODIFY_ADD, [dns[i]])]})
    conn.unbind()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--postgresql", action="store_true", help="also run on PostgreSQL (127.0.0.1:5432)")
    parser.add_argument("--rounds", type=int, default=3, help="incremental runs measured per figure (median)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--env", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(argparse.Namespace(mode=args.child, env=args.env))
        return

    rng = random.Random(4)
    backends = ["sqlite"] + (["postgresql"] if args.postgresql else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="idp-sync-bench-") as folder:
        work = Path(folder)
        for backend in backends:
            slapd = Slapd(work / f"slapd-{backend}", max_page=1000)
            slapd.start()
            try:
                slapd.prepare()
                base = f"ou=bench,{OPENLDAP_SUFFIX}"
                ldif = work / f"{backend}.ldif"
                dns = write_ldif(ldif, base, args.users, args.groups, rng)
                started = time.perf_counter()
                subprocess.run(["ldapadd", "-x", "-H", slapd.url, "-D", ROOT_DN["openldap"], "-w", ROOT_PASSWORD,
                                "-f", str(ldif)], check=True, stdout=subprocess.DEVNULL)
                print(f"[{backend}] loaded {args.users} users and {args.groups} groups into slapd in "
                      f"{time.perf_counter() - started:.1f} s", flush=True)
                database, drop = _database(backend, work)
                source = {"name": "bench", "url": slapd.url, "preset": "openldap", "base_dn": base,
                          "bind_dn": SYNC_DN["openldap"], "bind_password": SYNC_PASSWORD,
                          "allow_plaintext_bind": True, "page_size": 1000}
                env = {"IDP_DATA_DIR": str(work / backend), "IDP_DATABASE_URL": database,
                       "IDP_SECRET_KEY": "YmVuY2htYXJrLXNlY3JldC1rZXktdGhhdC1pcy1sb25nLWVub3VnaA==",
                       "IDP_KEYS_ENCRYPTION_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
                       "IDP_DIRECTORY_SOURCES": json.dumps([source], ensure_ascii=False)}
                try:
                    measured: dict[str, list[dict[str, Any]]] = {"full sync": [run_child("full", env)]}
                    used: set[int] = set()
                    for _ in range(args.rounds):
                        change_100(slapd, dns, rng, base, used)
                        measured.setdefault("incremental, 100 changes", []).append(run_child("incremental", env))
                    for _ in range(args.rounds):
                        measured.setdefault("incremental, no change", []).append(run_child("incremental", env))
                finally:
                    drop()
            finally:
                slapd.kill()
            for name, runs in measured.items():
                durations = sorted(float(figures["duration"]) for figures in runs)
                median = statistics.median(durations)
                rows.append((backend, name, median, durations[0], args.users / median, runs[-1],
                             max(float(figures["peak_rss_mb"]) for figures in runs)))
                print(f"[{backend}] {name}: " + ", ".join(f"{d:.2f} s" for d in durations)
                      + f"; last: {json.dumps(runs[-1])}", flush=True)
    print()
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{args.rounds} rounds per incremental figure")
    print()
    print("| database | run | median | best | users/s (median) | peak RSS | changes applied (last round) |")
    print("|---|---|---|---|---|---|---|")
    for backend, name, median, best, rate, figures, peak in rows:
        changes = (f"{figures['created']} created, {figures['updated']} updated, {figures['disabled']} disabled, "
                   f"{figures['memberships']} memberships")
        print(f"| {backend} | {name} | {median:.2f} s | {best:.2f} s | {rate:,.0f} | {peak:.0f} MB | {changes} |")


def _database(backend: str, work: Path) -> tuple[str, Callable[[], None]]:
    if backend == "sqlite":
        return f"sqlite:///{work / 'bench.sqlite3'}", lambda: None
    import psycopg

    name = f"idp_bench_{uuid.uuid4().hex[:8]}"
    admin = os.environ.get("IDP_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}", drop


if __name__ == "__main__":
    main()
