"""A real OpenLDAP ``slapd`` for the tests and the benchmark, and a builder for a municipal directory in it.

``Slapd`` starts slapd in the foreground on a free loopback port, with its own configuration and databases
in a temporary folder (never the system's slapd), and can kill and restart it for the outage cases. It
serves two suffixes:

- ``dc=stadt,dc=example``: an OpenLDAP directory (inetOrgPerson, groupOfNames, posixGroup, the memberof,
  refint and ppolicy overlays, so that moves keep group members and ``pwdAccountLockedTime`` locks an
  account, as in production);
- ``dc=rathaus,dc=example``: a stand-in for Active Directory (``ad-standin.schema``: sAMAccountName,
  objectGUID, userAccountControl, uSNChanged; memberOf kept by the memberof overlay, and member DNs kept
  through moves and deletes by refint, as AD's linked attributes are).

The service account ``cn=idp-sync`` may read at most ``max_page`` entries per page, as AD's MaxPageSize
allows 1000: a search that does not page, or pages bigger, fails with sizeLimitExceeded.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, NONE, Connection, Server

HERE = Path(__file__).resolve().parent
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
ROOT_PASSWORD = "root-secret"
SYNC_PASSWORD = "sync-secret"
USER_PASSWORD = "Sommer2026!"
OPENLDAP_SUFFIX = "dc=stadt,dc=example"
AD_SUFFIX = "dc=rathaus,dc=example"
SYNC_DN = {"openldap": f"cn=idp-sync,{OPENLDAP_SUFFIX}", "active-directory": f"cn=idp-sync,{AD_SUFFIX}"}
ROOT_DN = {"openldap": f"cn=admin,{OPENLDAP_SUFFIX}", "active-directory": f"cn=admin,{AD_SUFFIX}"}
SUFFIX = {"openldap": OPENLDAP_SUFFIX, "active-directory": AD_SUFFIX}


def slapd_binary() -> str:
    found = shutil.which("slapd") or ("/usr/sbin/slapd" if Path("/usr/sbin/slapd").exists() else None)
    assert found, "slapd is missing: run scripts/ensure-test-services.sh (installs the Debian packages slapd and " \
                  "ldap-utils)"
    return found


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies, so that even a killed test run leaves
    no slapd behind (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path


def make_tls_files(folder: Path, name: str = "test") -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1/localhost, signed by it (ECDSA P-256)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
          .not_valid_after(now + timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / f"{name}-ca.pem", folder / f"{name}-cert.pem", folder / f"{name}-key.pem")
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


class SlapdExited(RuntimeError):
    """slapd stopped right after starting (a port in use, a configuration error)."""


class Slapd:
    """One slapd process in ``folder``; ``url`` stays the same across ``kill()`` and ``start()``."""

    def __init__(self, folder: Path, *, tls: TlsFiles | None = None, max_page: int = 50) -> None:
        self.folder = folder
        self.tls = tls
        self.max_page = max_page
        self.port = free_port()
        self.ldaps_port = free_port() if tls else None
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("openldap", "ad"):
            (folder / name).mkdir(exist_ok=True)
        self.config = folder / "slapd.conf"
        self.config.write_text(self._config())
        self.log = folder / "slapd.log"

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        assert self.ldaps_port, "this slapd has no TLS"
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    def _config(self) -> str:
        tls = ""
        if self.tls:
            tls = f"TLSCertificateFile {self.tls.cert}\nTLSCertificateKeyFile {self.tls.key}\n"
        limit = (f"size.soft={self.max_page} size.hard={self.max_page} size.pr={self.max_page} "
                 "size.prtotal=unlimited")
        return f"""\
include {SCHEMA_DIR}/core.schema
include {SCHEMA_DIR}/cosine.schema
include {SCHEMA_DIR}/inetorgperson.schema
include {SCHEMA_DIR}/nis.schema
include {HERE}/ad-standin.schema
modulepath {MODULE_DIR}
moduleload back_mdb
moduleload memberof
moduleload ppolicy
moduleload refint
pidfile {self.folder}/slapd.pid
argsfile {self.folder}/slapd.args
{tls}
database mdb
suffix "{OPENLDAP_SUFFIX}"
rootdn "{ROOT_DN['openldap']}"
rootpw {ROOT_PASSWORD}
directory {self.folder}/openldap
maxsize 1073741824
dbnosync
index entryUUID eq
index uid eq
index modifyTimestamp eq
limits dn.exact="{SYNC_DN['openldap']}" {limit}
overlay memberof
overlay refint
refint_attributes member
overlay ppolicy
ppolicy_default "cn=default,{OPENLDAP_SUFFIX}"

database mdb
suffix "{AD_SUFFIX}"
rootdn "{ROOT_DN['active-directory']}"
rootpw {ROOT_PASSWORD}
directory {self.folder}/ad
maxsize 1073741824
dbnosync
index objectGUID eq
index sAMAccountName eq
index uSNChanged eq
limits dn.exact="{SYNC_DN['active-directory']}" {limit}
overlay memberof
memberof-group-oc group
overlay refint
refint_attributes member
"""

    def start(self, timeout: float = 10.0) -> None:
        """Start slapd and wait until it answers. On a first start, a port taken meanwhile by another process
        (the free port was only free when we looked) is replaced by another one; later starts keep the URL."""
        for attempt in range(3):
            try:
                self._start(timeout)
                self._started = True
                return
            except SlapdExited:
                if getattr(self, "_started", False) or attempt == 2:
                    raise
                self.port = free_port()
                self.ldaps_port = free_port() if self.tls else None

    def _start(self, timeout: float) -> None:
        assert self.process is None, "slapd is running already"
        urls = self.url + (f" {self.ldaps_url}" if self.tls else "")
        with self.log.open("ab") as log:
            # -d 0: stay in the foreground (no fork), so that this object owns the process and can kill it.
            self.process = subprocess.Popen([slapd_binary(), "-f", str(self.config), "-h", urls, "-d", "0"],
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise SlapdExited(f"slapd exited at start; see {self.log}:\n{self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            connection = Connection(Server("127.0.0.1", port=self.port, get_info=NONE, connect_timeout=1),
                                    receive_timeout=2)
            try:
                connection.bind()
                return
            finally:
                connection.unbind()
        self.kill()
        raise RuntimeError(f"slapd did not answer within {timeout} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled cable would; the data stays (mdb), so ``start()`` resumes it."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def admin(self, kind: str) -> Connection:
        return Connection(Server("127.0.0.1", port=self.port, get_info=NONE), ROOT_DN[kind], ROOT_PASSWORD,
                          auto_bind=True, raise_exceptions=True)

    def prepare(self) -> None:
        """The suffix entries, the sync service accounts and the default password policy."""
        for kind, suffix in SUFFIX.items():
            conn = self.admin(kind)
            dc = suffix.split(",")[0].split("=")[1]
            conn.add(suffix, ["dcObject", "organization"], {"dc": dc, "o": dc})
            conn.add(SYNC_DN[kind], ["person"], {"cn": "idp-sync", "sn": "service", "userPassword": SYNC_PASSWORD})
            if kind == "openldap":
                conn.add(f"cn=default,{suffix}", ["pwdPolicy", "person"],
                         {"cn": "default", "sn": "policy", "pwdAttribute": "userPassword", "pwdLockout": "TRUE"})
            conn.unbind()


_usn = itertools.count(1000)
"""uSNChanged values of the AD stand-in: one counter for the whole run, like a domain controller's."""


def ascii_mail(name: str) -> str:
    """Mail addresses are IA5 (ASCII) in the LDAP schema: the German transliteration."""
    for umlaut, plain in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss"), ("ı", "i")):
        name = name.replace(umlaut, plain)
    return name


@dataclass
class Person:
    username: str
    given: str
    family: str
    department: str
    mobile: str | None = None


MUNICIPALITY = [
    Person("jürgen.groß", "Jürgen", "Groß", "Bauamt", "+49 151 1000001"),
    Person("erika.mustermann", "Erika", "Mustermann", "Bauamt"),
    Person("hans.meier", "Hans", "Meier", "Bauamt", "+49 151 1000003"),
    Person("petra.schäfer", "Petra", "Schäfer", "Bauamt"),
    Person("björn.öhler", "Björn", "Öhler", "Bürgeramt"),
    Person("anna.weiß", "Anna", "Weiß", "Bürgeramt", "+49 151 1000006"),
    Person("özlem.yilmaz", "Özlem", "Yılmaz", "Bürgeramt"),
    Person("klaus.straßburger", "Klaus", "Straßburger", "Kämmerei"),
    Person("maria.müller", "Maria", "Müller", "Kämmerei"),
    Person("günther.kühn", "Günther", "Kühn", "Kämmerei"),
    Person("stefan.bäcker", "Stefan", "Bäcker", "Ordnungsamt"),
    Person("lena.fuß", "Lena", "Fuß", "Ordnungsamt", "+49 151 1000012"),
    Person("tobias.koch", "Tobias", "Koch", "Ordnungsamt"),
]
DEPARTMENTS = ["Bauamt", "Bürgeramt", "Kämmerei", "Ordnungsamt"]


@dataclass
class Directory:
    """A municipal directory in its own subtree of one slapd suffix, with the operations the tests need."""

    slapd: Slapd
    kind: str
    """``openldap`` or ``active-directory``."""
    base: str = ""
    users: dict[str, str] = field(default_factory=dict)
    """username → DN"""
    groups: dict[str, str] = field(default_factory=dict)
    """group name → DN"""
    conn: Any = None

    def __post_init__(self) -> None:
        self.base = self.base or f"ou=t{uuid.uuid4().hex[:10]},{SUFFIX[self.kind]}"
        self.connect()

    def connect(self) -> None:
        if self.conn is not None:
            self.close()
        self.conn = self.slapd.admin(self.kind)

    def close(self) -> None:
        try:
            self.conn.unbind()
        except Exception:  # slapd may have been killed by the test
            pass
        if getattr(self.conn, "socket", None) is not None:
            self.conn.socket.close()

    @property
    def ad(self) -> bool:
        return self.kind == "active-directory"

    def _usn(self) -> dict[str, Any]:
        return {"uSNChanged": str(next(_usn))} if self.ad else {}

    def build(self, people: Iterable[Person] = MUNICIPALITY, *, extra_users: int = 0) -> Directory:
        self.conn.add(self.base, ["organizationalUnit"], {"ou": self.base.split(",")[0].split("=")[1]})
        for ou in [*DEPARTMENTS, "Gruppen", "Ehemalige"]:
            self.conn.add(f"ou={ou},{self.base}", ["organizationalUnit"], {"ou": ou})
        people = list(people)
        for number in range(extra_users):
            people.append(Person(f"mitarbeiter{number:05d}", "Mitarbeiter", f"Nummer {number}",
                                 DEPARTMENTS[number % len(DEPARTMENTS)]))
        for person in people:
            self.add_user(person)
        for department in DEPARTMENTS:
            members = [self.users[p.username] for p in people if p.department == department]
            self.add_group(department, members)
        self.add_group("Bauamt-Leitung", [self.users["jürgen.groß"]])
        self.add_member("Bauamt", self.groups["Bauamt-Leitung"])
        self.add_group("Alle Mitarbeitenden", [self.groups[d] for d in DEPARTMENTS])
        if not self.ad:
            self.conn.add(f"cn=VPN-Nutzer,ou=Gruppen,{self.base}", ["posixGroup"],
                          {"cn": "VPN-Nutzer", "gidNumber": "5000", "memberUid": ["Hans.Meier", "tobias.koch"]})
            self.groups["VPN-Nutzer"] = f"cn=VPN-Nutzer,ou=Gruppen,{self.base}"
        return self

    def add_user(self, person: Person, *, disabled: bool = False) -> str:
        rdn = f"cn={person.given} {person.family}" if self.ad else f"uid={person.username}"
        dn = f"{rdn},ou={person.department},{self.base}"
        attributes: dict[str, Any] = {
            "cn": f"{person.given} {person.family}", "givenName": person.given, "sn": person.family,
            "mail": f"{ascii_mail(person.username)}@stadt.example", "userPassword": USER_PASSWORD,
            "displayName": f"{person.given} {person.family}",
        }
        if person.mobile:
            attributes["mobile"] = person.mobile
        if self.ad:
            attributes.update({"sAMAccountName": person.username, "objectGUID": uuid.uuid4().bytes_le,
                               "userAccountControl": "514" if disabled else "512", **self._usn()})
            self.conn.add(dn, ["user"], attributes)
        else:
            attributes["uid"] = person.username
            if disabled:
                attributes["pwdAccountLockedTime"] = "000001010000Z"
            self.conn.add(dn, ["inetOrgPerson"], attributes)
        self.users[person.username] = dn
        return dn

    def add_group(self, name: str, members: list[str]) -> str:
        dn = f"cn={name},ou=Gruppen,{self.base}"
        if self.ad:
            self.conn.add(dn, ["group"], {"cn": name, "member": members, "objectGUID": uuid.uuid4().bytes_le,
                                          **self._usn()})
        else:
            self.conn.add(dn, ["groupOfNames"], {"cn": name, "member": members})
        self.groups[name] = dn
        return dn

    def modify(self, dn: str, **values: Any) -> None:
        changes = {name: [(MODIFY_REPLACE, [] if value is None else
                           (value if isinstance(value, list) else [value]))] for name, value in values.items()}
        changes.update({name: [(MODIFY_REPLACE, [value])] for name, value in self._usn().items()})
        self.conn.modify(dn, changes)

    def set_user(self, username: str, **values: Any) -> None:
        self.modify(self.users[username], **values)

    def disable(self, username: str) -> None:
        if self.ad:
            self.set_user(username, userAccountControl="514")
        else:
            self.set_user(username, pwdAccountLockedTime="000001010000Z")

    def enable(self, username: str) -> None:
        if self.ad:
            self.set_user(username, userAccountControl="512")
        else:
            self.set_user(username, pwdAccountLockedTime=None)

    def rename(self, username: str, new_username: str) -> None:
        dn = self.users.pop(username)
        if self.ad:
            # In AD the logon name is an attribute; the DN (by cn) stays.
            self.modify(dn, sAMAccountName=new_username)
            self.users[new_username] = dn
        else:
            self.conn.modify_dn(dn, f"uid={new_username}", delete_old_dn=True)
            self.users[new_username] = f"uid={new_username}," + dn.split(",", 1)[1]

    def move(self, username: str, department: str) -> None:
        dn = self.users[username]
        parent = f"ou={department},{self.base}"
        self.conn.modify_dn(dn, dn.split(",", 1)[0], new_superior=parent)
        self.users[username] = f"{dn.split(',', 1)[0]},{parent}"
        if self.ad:
            self.modify(self.users[username])

    def delete(self, username: str) -> None:
        dn = self.users.pop(username)
        if self.ad:
            # AD drops a deleted object from every group (linked attributes); OpenLDAP leaves the DN dangling.
            for group in self.groups:
                if self._has_member(self.groups[group], dn):
                    self.remove_member(group, dn)
        self.conn.delete(dn)

    def _has_member(self, group_dn: str, member_dn: str) -> bool:
        self.conn.search(group_dn, "(objectClass=*)", search_scope="BASE", attributes=["member"])
        values = self.conn.response[0]["attributes"].get("member", []) if self.conn.response else []
        return any(value.lower() == member_dn.lower() for value in values)

    def add_member(self, group: str, member_dn: str) -> None:
        self.conn.modify(self.groups[group], {"member": [(MODIFY_ADD, [member_dn])], **{
            name: [(MODIFY_REPLACE, [value])] for name, value in self._usn().items()}})

    def remove_member(self, group: str, member_dn: str) -> None:
        self.conn.modify(self.groups[group], {"member": [(MODIFY_DELETE, [member_dn])], **{
            name: [(MODIFY_REPLACE, [value])] for name, value in self._usn().items()}})

    def source(self, name: str = "rathaus", **overrides: Any) -> dict[str, Any]:
        """The ``[[directory.sources]]`` table for this directory (as a dict, for TOML or JSON)."""
        config: dict[str, Any] = {
            "name": name, "url": self.slapd.url, "preset": self.kind, "base_dn": self.base,
            "bind_dn": SYNC_DN[self.kind], "bind_password": SYNC_PASSWORD, "allow_plaintext_bind": True,
            "page_size": 5, "timeout": "3s",
        }
        config.update(overrides)
        return {key: value for key, value in config.items() if value is not None}
