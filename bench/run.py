"""The protocol benchmark (`make bench`): sign-ins, tokens, userinfo, introspection, discovery and JWKS per
second against the real ``idp serve`` on SQLite and PostgreSQL with 1 and 2 workers, at 16 and 64 concurrent
clients, and node-oidc-provider for (c), (d) and (f) in the same run; prints a table and writes it into
bench/README.md between its markers. See bench/README.md for the method.

    .venv/bin/python -m bench.run            # the full run (about 8-10 minutes)
    .venv/bin/python -m bench.run --quick    # SQLite, 1 worker, 16 clients, short: checks the harness
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.load import Result, Shape, UserPool, basic, ensure_wrk, mint_tokens, run_signins, run_wrk
from bench.servers import PASSWORD, IdpServer, NodeServer, ensure_oidc_provider, oidc_provider_version, rss_mb

BENCH = Path(__file__).resolve().parent
README = BENCH / "README.md"
RESULTS = BENCH / "results"
BEGIN, END = "<!-- bench.run: begin (generated, replaced by each full run) -->", "<!-- bench.run: end -->"

SCENARIOS: dict[str, str] = {
    "a": "(a) password sign-ins",
    "b": "(b) complete sign-ins with TOTP",
    "c": "(c) client_credentials",
    "d": "(d) refresh rotations",
    "e-userinfo": "(e) userinfo",
    "e-introspect": "(e) introspection",
    "f-discovery": "(f) discovery",
    "f-jwks": "(f) JWKS",
}
NODE_SCENARIOS = ("c", "d", "f-discovery", "f-jwks")
# Section 4 of issue 7; they are stated for PostgreSQL with 2 workers and shown next to every figure.
RATE_GOALS = {"b": 60.0, "c": 1000.0, "d": 1000.0}
RATIO_GOALS = {"f-discovery": 1.0, "f-jwks": 1.0}
MEMORY_GOAL_MB = 120.0
READY_GOAL_S = 2.0


@dataclass
class Row:
    system: str
    backend: str
    workers: int
    concurrency: int
    scenario: str
    result: Result


@dataclass
class ServerFacts:
    system: str
    backend: str
    workers: int
    ready_seconds: float
    rss_mb: list[float]


def argon2_ceiling(seconds: float) -> float:
    """Password verifications per second with the configured argon2id cost on both cores (two threads:
    argon2-cffi releases the GIL), in this process: what no HTTP sign-in can exceed."""
    from idp.accounts.passwords import Passwords
    from idp.config import PasswordSettings

    passwords = Passwords(PasswordSettings())
    stored = passwords.hash(PASSWORD)
    counts = [0, 0]
    end = time.monotonic() + seconds

    def work(slot: int) -> None:
        while time.monotonic() < end:
            passwords.verify(stored, PASSWORD)
            counts[slot] += 1

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - started)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _token_files(token_dir: Path, name: str, tokens: list[str]) -> tuple[str, str]:
    """Two files of never-used refresh tokens, half each: one for the warm-up, one for the measured run."""
    half = len(tokens) // 2
    paths = (token_dir / f"{name}-warmup.txt", token_dir / f"{name}.txt")
    paths[0].write_text("".join(f"{t}\n" for t in tokens[:half]))
    paths[1].write_text("".join(f"{t}\n" for t in tokens[half:]))
    return str(paths[0]), str(paths[1])


def _measure_idp(server: IdpServer, scenarios: list[str], concurrencies: list[int], seconds: float, warmup: float,
                 rows: list[Row], token_dir: Path, one_address: bool) -> None:
    seeded = server.seeded
    web_auth = basic(seeded.web[0], seeded.web[1])
    service_auth = basic(*seeded.service)
    password_pool = UserPool(seeded.password_users)
    totp_pool = UserPool(seeded.totp_users)
    pids: Callable[[], list[int]] = server.all_pids
    access_token = ""
    if any(s.startswith("e-") for s in scenarios):
        access_token = mint_tokens(server.base, seeded.web, seeded.password_users[0], 1)[0]["access_token"]
    for concurrency in concurrencies:
        for scenario in scenarios:
            _say(f"  ours {server.backend} {server.workers}w c={concurrency} {SCENARIOS[scenario]}")
            common = Shape(concurrency, seconds, warmup, pids)
            # A sign-in takes up to seconds at 64 clients: their warm-up is longer, so that the window is full.
            signins = Shape(concurrency, seconds, warmup + 2, pids)
            if scenario == "a":
                result = run_signins(server.base, seeded.web, password_pool, signins, with_totp=False,
                                     with_exchange=False, one_address=one_address)
            elif scenario == "b":
                result = run_signins(server.base, seeded.mfa_web, totp_pool, signins, with_totp=True,
                                     with_exchange=True, one_address=one_address)
            elif scenario == "c":
                result = run_wrk(server.base, "request.lua", ["POST", "/token", service_auth,
                                                              "grant_type=client_credentials"], common)
            elif scenario == "d":
                # One chain per connection plus spares for chains an error would end; the warm-up spends its own.
                tokens = mint_tokens(server.base, seeded.web, seeded.password_users[1], 2 * (concurrency + 8))
                files = _token_files(token_dir, f"ours-{server.backend}-{server.workers}-{concurrency}",
                                     [t["refresh_token"] for t in tokens])
                result = run_wrk(server.base, "refresh.lua", ["/token", web_auth, files[1]], common,
                                 warmup_args=["/token", web_auth, files[0]])
            elif scenario == "e-userinfo":
                result = run_wrk(server.base, "request.lua", ["GET", "/userinfo", f"Bearer {access_token}"],
                                 common)
            elif scenario == "e-introspect":
                result = run_wrk(server.base, "request.lua", ["POST", "/introspect", web_auth,
                                                              f"token={access_token}"], common)
            elif scenario == "f-discovery":
                result = run_wrk(server.base, "request.lua", ["GET", "/.well-known/openid-configuration"], common)
            else:
                result = run_wrk(server.base, "request.lua", ["GET", "/jwks"], common)
            rows.append(Row("ours", server.backend, server.workers, concurrency, scenario, result))
            _say(f"    {result.rate:,.0f}/s, {result.errors} errors {result.error_kinds or ''}")


def _measure_node(node: NodeServer, scenarios: list[str], concurrencies: list[int], seconds: float, warmup: float,
                  rows: list[Row], token_dir: Path) -> None:
    auth = basic(node.client_id, node.client_secret)
    for concurrency in concurrencies:
        for scenario in scenarios:
            _say(f"  node-oidc-provider c={concurrency} {SCENARIOS[scenario]}")
            common = Shape(concurrency, seconds, warmup, node.pids)
            if scenario == "c":
                result = run_wrk(node.base, "request.lua", ["POST", "/token", auth, "grant_type=client_credentials"],
                                 common)
            elif scenario == "d":
                # As for ours: one chain per connection plus spares, the warm-up with tokens of its own. Each pool
                # is minted just before it is spent (the measured one after the warm-up): the in-memory adapter's
                # LRU forgets tokens that wait through a second of rotations (NodeServer.mint).
                take = concurrency + 8
                if warmup > 0:
                    warmup_file = token_dir / f"node-{concurrency}-warmup.txt"
                    warmup_file.write_text("".join(f"{t}\n" for t in node.mint(take)))
                    run_wrk(node.base, "refresh.lua", ["/token", auth, str(warmup_file)],
                            Shape(concurrency, warmup, 0, node.pids))
                measured_file = token_dir / f"node-{concurrency}.txt"
                measured_file.write_text("".join(f"{t}\n" for t in node.mint(take)))
                result = run_wrk(node.base, "refresh.lua", ["/token", auth, str(measured_file)],
                                 Shape(concurrency, seconds, 0, node.pids))
            elif scenario == "f-discovery":
                result = run_wrk(node.base, "request.lua", ["GET", "/.well-known/openid-configuration"], common)
            else:
                result = run_wrk(node.base, "request.lua", ["GET", "/jwks"], common)
            rows.append(Row("node", "memory", 1, concurrency, scenario, result))
            _say(f"    {result.rate:,.0f}/s, {result.errors} errors {result.error_kinds or ''}")


# --- the report ----------------------------------------------------------------------------------------------

def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _per_op(result: Result) -> str:
    """Server CPU milliseconds per completed operation: what one costs, nearly independent of other load."""
    return f"{1000 * result.server_cpu / result.operations:.2f}" if result.operations else "—"


def _goal(scenario: str, rate: float, ratio: float | None) -> str:
    if scenario in RATE_GOALS:
        goal = RATE_GOALS[scenario]
        text = f"≥ {goal:,.0f}/s {'✓' if rate >= goal else '✗'}"
        if scenario in ("c", "d"):
            text += " (ratio → 1.0)"
        return text
    if scenario in RATIO_GOALS:
        if ratio is None:
            return f"ratio ≥ {RATIO_GOALS[scenario]:.1f}"
        return f"ratio ≥ {RATIO_GOALS[scenario]:.1f} {'✓' if ratio >= RATIO_GOALS[scenario] else '✗'}"
    if scenario == "a":
        return "— (ceiling of (b))"
    return "—"


def _goal_summary(rows: list[Row], facts: list[ServerFacts], node: dict[tuple[int, str], Result]) -> list[str]:
    """The goals of section 4 against the configuration they are stated for (PostgreSQL, 2 workers), taking
    the better of the two client counts."""
    ours = [r for r in rows if r.system == "ours" and r.backend == "postgresql" and r.workers == 2]
    fact = next((f for f in facts if f.system == "ours" and f.backend == "postgresql" and f.workers == 2), None)
    if not ours and fact is None:
        return []
    lines = ["Goals for PostgreSQL with 2 workers (better of 16 and 64 clients):", "",
             "| goal | measured | met |", "|---|---|---|"]

    def best(scenario: str) -> Row | None:
        found = [r for r in ours if r.scenario == scenario]
        return max(found, key=lambda r: r.result.rate) if found else None

    for scenario, goal in RATE_GOALS.items():
        row = best(scenario)
        if row is not None:
            lines.append(f"| {SCENARIOS[scenario]} ≥ {goal:,.0f}/s | {row.result.rate:,.0f}/s ({row.concurrency} "
                         f"clients) | {'yes' if row.result.rate >= goal else 'no'} |")
    for scenario, goal in RATIO_GOALS.items():
        ratios = [(r.result.rate / node[(r.concurrency, scenario)].rate, r.concurrency) for r in ours
                  if r.scenario == scenario and node.get((r.concurrency, scenario)) and
                  node[(r.concurrency, scenario)].rate]
        if ratios:
            ratio, clients = max(ratios)
            lines.append(f"| {SCENARIOS[scenario]}: ratio to node-oidc-provider ≥ {goal:.1f} | {ratio:.2f} "
                         f"({clients} clients) | {'yes' if ratio >= goal else 'no'} |")
    if fact is not None and fact.rss_mb:
        worst = max(fact.rss_mb)
        lines.append(f"| resident memory ≤ {MEMORY_GOAL_MB:.0f} MB per worker | {worst:.0f} MB (largest worker) | "
                     f"{'yes' if worst <= MEMORY_GOAL_MB else 'no'} |")
    if fact is not None:
        lines.append(f"| ready ≤ {READY_GOAL_S:.0f} s after start | {fact.ready_seconds:.2f} s | "
                     f"{'yes' if fact.ready_seconds <= READY_GOAL_S else 'no'} |")
    return [*lines, ""]


def render(rows: list[Row], facts: list[ServerFacts], meta: dict[str, str], ceiling: float | None) -> str:
    node = {(r.concurrency, r.scenario): r.result for r in rows if r.system == "node"}
    lines = [
        f"Measured {meta['date']} on {meta['machine']}; load average before the run {meta['load']}. "
        f"{meta['versions']}. Each figure: {meta['seconds']} s measured after {meta['warmup']} s of warm-up. "
        "Goals (issue 7, section 4) are stated for PostgreSQL with 2 workers; they are shown on every row. "
        "CPU columns: cores busy during the measurement (CPU seconds / wall seconds) for the server's processes and "
        "for the load generator (wrk, or the Python sign-in driver for (a) and (b)); CPU ms/op: the server's CPU time "
        "per completed operation." + (f" Deviations: {meta['server_env']}." if meta.get("server_env") else ""),
        "",
    ]
    if ceiling is not None:
        lines += [f"argon2id alone (configured cost, two threads in one process, no HTTP): **{ceiling:,.0f} "
                  "verifications/s**, the ceiling of (a) and (b).", ""]
    lines += _goal_summary(rows, facts, node)
    lines += ["| scenario | DB | workers | clients | ours /s | node-oidc-provider /s | ratio | goal | errors | "
              "p50 / p99 ms | server CPU | CPU ms/op | load-gen CPU |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in (r for r in rows if r.system == "ours"):
        res = row.result
        theirs = node.get((row.concurrency, row.scenario))
        ratio = res.rate / theirs.rate if theirs and theirs.rate else None
        db = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[row.backend]
        lines.append(
            f"| {SCENARIOS[row.scenario]} | {db} | {row.workers} | {row.concurrency} | **{_num(res.rate)}** | "
            f"{_num(theirs.rate) if theirs else ''} | {_num(ratio, 2) if theirs else ''} | "
            f"{_goal(row.scenario, res.rate, ratio)} | {res.errors} | "
            f"{_num(res.p50_ms, 1)} / {_num(res.p99_ms, 1)} | {res.server_cpu / res.seconds:.2f} | "
            f"{_per_op(res)} | {res.load_cpu / res.seconds:.2f} |")
    node_rows = [r for r in rows if r.system == "node"]
    if node_rows:
        lines += ["", "node-oidc-provider alone (same run, same wrk scripts):", "",
                  "| scenario | clients | /s | errors | p50 / p99 ms | server CPU | CPU ms/op | load-gen CPU |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in node_rows:
            res = row.result
            lines.append(f"| {SCENARIOS[row.scenario]} | {row.concurrency} | {_num(res.rate)} | {res.errors} | "
                         f"{_num(res.p50_ms, 1)} / {_num(res.p99_ms, 1)} | {res.server_cpu / res.seconds:.2f} | "
                         f"{_per_op(res)} | {res.load_cpu / res.seconds:.2f} |")
    lines += ["", "| server | DB | workers | start to ready | goal | resident memory per worker after the run | goal |",
              "|---|---|---|---|---|---|---|"]
    for fact in facts:
        worst = max(fact.rss_mb) if fact.rss_mb else 0.0
        memory = ", ".join(f"{mb:.0f} MB" for mb in fact.rss_mb)
        if fact.system == "ours":
            db = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[fact.backend]
            lines.append(f"| ours | {db} | {fact.workers} | {fact.ready_seconds:.2f} s | ≤ 2 s "
                         f"{'✓' if fact.ready_seconds <= READY_GOAL_S else '✗'} | {memory} | ≤ 120 MB "
                         f"{'✓' if worst <= MEMORY_GOAL_MB else '✗'} |")
        else:
            lines.append(f"| node-oidc-provider | in-memory | 1 | {fact.ready_seconds:.2f} s | | "
                         f"{memory} | |")
    return "\n".join(lines) + "\n"


def write_readme(path: Path, table: str) -> None:
    """Replace what lies between the markers (appending them at the end the first time); nothing else."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{BEGIN}\n{table}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + f"\n\n## Results\n\n{block}\n"
    path.write_text(text, encoding="utf-8")


def _meta(seconds: float, warmup: float) -> dict[str, str]:
    from importlib.metadata import version

    try:
        pg = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=False).stdout.split()[2]
    except (OSError, IndexError):
        pg = "?"
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    wrk = subprocess.run([ensure_wrk(), "-v"], capture_output=True, text=True, check=False)
    wrk_version = (wrk.stdout or wrk.stderr).split()[1] if (wrk.stdout or wrk.stderr).split()[1:] else "?"
    try:
        provider = oidc_provider_version()
    except OSError:
        provider = "?"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores ({platform.processor() or platform.machine()})",
        "load": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "versions": (f"Python {platform.python_version()}, uvicorn {version('uvicorn')}, argon2-cffi "
                     f"{version('argon2-cffi')}, PostgreSQL {pg}, wrk {wrk_version}, Node {node}, "
                     f"oidc-provider {provider}"),
        "seconds": f"{seconds:g}", "warmup": f"{warmup:g}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="check the harness: SQLite, 1 worker, 16 clients, 2 s per figure; README untouched")
    parser.add_argument("--backends", default=None, help="comma-separated: sqlite,postgresql")
    parser.add_argument("--workers", default=None, help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--concurrency", default=None, help="comma-separated client counts (default 16,64)")
    parser.add_argument("--scenarios", default=None, help=f"comma-separated of {','.join(SCENARIOS)}")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per figure (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each figure")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for `idp serve` (repeatable), e.g. MALLOC_ARENA_MAX=2")
    parser.add_argument("--one-address", action="store_true",
                        help="sign everyone in from one address (a town hall behind NAT) instead of one each")
    parser.add_argument("--no-node", action="store_true", help="leave out node-oidc-provider")
    parser.add_argument("--readme", type=Path, default=None,
                        help="where to write the table (default bench/README.md; not in --quick mode)")
    args = parser.parse_args(argv)
    quick = args.quick
    backends = (args.backends or ("sqlite" if quick else "sqlite,postgresql")).split(",")
    workers = [int(n) for n in (args.workers or ("1" if quick else "1,2")).split(",")]
    concurrencies = [int(n) for n in (args.concurrency or ("16" if quick else "16,64")).split(",")]
    scenarios = (args.scenarios or ",".join(SCENARIOS)).split(",")
    unknown = [s for s in scenarios if s not in SCENARIOS] + [b for b in backends if b not in ("sqlite", "postgresql")]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    seconds = args.seconds or (2.0 if quick else 5.0)
    warmup = args.warmup
    readme = args.readme or (None if quick else README)
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    if extra_env:
        meta_note = ", ".join(args.server_env)
    else:
        meta_note = ""
    ensure_wrk()
    if not args.no_node and any(s in NODE_SCENARIOS for s in scenarios):
        ensure_oidc_provider()  # before the header names its version, also on a fresh checkout
    meta = _meta(seconds, warmup)
    meta["server_env"] = meta_note
    rows: list[Row] = []
    facts: list[ServerFacts] = []
    failures: list[str] = []
    # Enough second-factor users that none must spend a TOTP step twice (each can sign in about twice per 30 s):
    # 16 s of (b) per configuration at the argon2id ceiling of about 83/s need some 700.
    totp_users = 400 if quick else 1500
    with tempfile.TemporaryDirectory(prefix="idp-bench-") as tmp:
        work = Path(tmp)
        ceiling = None
        if "a" in scenarios or "b" in scenarios:
            _say("argon2id ceiling")
            ceiling = argon2_ceiling(2.0 if quick else 3.0)
        node_scenarios = [s for s in scenarios if s in NODE_SCENARIOS]
        if node_scenarios and not args.no_node:
            node: NodeServer | None = None
            try:
                node = NodeServer(work)
                node.start()
                _measure_node(node, node_scenarios, concurrencies, seconds, warmup, rows, work)
                facts.append(ServerFacts("node", "memory", 1, node.ready_seconds, [rss_mb(node.pids()[0])]))
            except Exception as exc:  # noqa: BLE001 - our figures are still worth having
                failures.append(f"node-oidc-provider: {type(exc).__name__}: {str(exc)[:300]}")
                _say(f"  FAILED: {failures[-1]}")
            finally:
                if node is not None:
                    node.stop()
        for backend in backends:
            for count in workers:
                _say(f"ours: {backend}, {count} worker(s): seeding")
                server: IdpServer | None = None
                try:
                    server = IdpServer(backend, count, work, password_users=200, totp_users=totp_users,
                                       extra_env=extra_env)
                    server.start()
                    _say(f"  ready in {server.ready_seconds:.2f} s")
                    _measure_idp(server, scenarios, concurrencies, seconds, warmup, rows, work, args.one_address)
                    facts.append(ServerFacts("ours", backend, count, server.ready_seconds,
                                             [rss_mb(pid) for pid in server.worker_pids()]))
                except Exception as exc:  # noqa: BLE001 - one failed configuration must not lose the others' figures
                    failures.append(f"{backend}, {count} worker(s): {type(exc).__name__}: {str(exc)[:300]}")
                    _say(f"  FAILED: {failures[-1]}")
                finally:
                    if server is not None:
                        server.stop()
    if args.one_address:
        meta["server_env"] = ", ".join(filter(None, [meta["server_env"], "sign-ins all from one address"]))
    table = render(rows, facts, meta, ceiling)
    if failures:
        table += "\nFailed configurations (no figures): " + "; ".join(failures) + "\n"
    print(table)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{stamp}{'-quick' if quick else ''}.json").write_text(json.dumps({
        "meta": meta, "argon2_ceiling": ceiling, "facts": [asdict(f) for f in facts],
        "rows": [{**asdict(r), "rate": r.result.rate} for r in rows]}, indent=1))
    if readme is not None:
        write_readme(readme, table)
        _say(f"table written into {readme}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
