"""``[[directory.sources]]`` in the configuration: defaults, and messages that name the offending key
(issue 4, §1)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from directory_sync.presets import mapping_for
from idp.config import ConfigError, load_settings, reference_markdown
from tests.directory.support import toml_sources

AD = {"name": "rathaus", "url": ["ldaps://dc1.rathaus.example", "ldaps://dc2.rathaus.example"],
      "preset": "active-directory", "base_dn": "DC=rathaus,DC=example",
      "bind_dn": "CN=idp-sync,OU=Dienste,DC=rathaus,DC=example", "bind_password": "geheim"}


def load(tmp_path: Path, *sources: dict[str, Any]) -> Any:
    path = tmp_path / "idp.toml"
    path.write_text(toml_sources(list(sources)), encoding="utf-8")
    return load_settings(environ={}, path=str(path))


def test_sources_with_defaults(tmp_path: Path) -> None:
    """Two sources load with the documented defaults; the preset fills in filters and attributes."""
    settings = load(tmp_path, AD, {"name": "schulen", "url": "ldap://ldap.schulen.example", "start_tls": True,
                                   "preset": "openldap", "base_dn": "dc=schulen,dc=example",
                                   "attributes": {"phone": "telephoneNumber"}, "max_disable_share": "5%"})
    rathaus, schulen = settings.directory.sources
    assert rathaus.url == ("ldaps://dc1.rathaus.example", "ldaps://dc2.rathaus.example")
    assert (rathaus.authentication, rathaus.interval, rathaus.retention, rathaus.max_disable_share) == (
        "bind", timedelta(minutes=5), timedelta(days=30), 0.1)
    assert settings.directory.schedule is True
    mapping = mapping_for(rathaus)
    assert mapping.user_filter == "(&(objectClass=user)(!(objectClass=computer)))"
    assert mapping.id_attribute == "objectGUID" and mapping.marker_attribute == "uSNChanged"
    assert mapping.group_base_dn == "DC=rathaus,DC=example"
    openldap = mapping_for(schulen)
    assert openldap.attr("phone") == ("telephoneNumber",) and openldap.attr("username") == ("uid",)
    assert openldap.marker_attributes == ("entryCSN", "modifyTimestamp")
    assert schulen.max_disable_share == 0.05


@pytest.mark.parametrize(("change", "message"), [
    ({"user_filtr": "(uid=*)"}, "source 'rathaus': unknown key user_filtr"),
    ({"preset": "univention"}, "source 'rathaus': preset: 'univention' is not one of active-directory, openldap"),
    ({"url": "https://dc1.rathaus.example"}, "is not ldap://host[:port] or ldaps://host[:port]"),
    ({"start_tls": True}, "start_tls is for ldap:// URLs"),
    ({"bind_password": None}, "bind_dn needs bind_password or bind_password_file"),
    ({"bind_password_file": "/nonexistent/secret"}, "bind_password and bind_password_file: set only one"),
    ({"attributes": {"usernam": "mail"}}, "unknown attribute usernam"),
    ({"max_disable_share": "150%"}, "max_disable_share must lie between 0 and 1"),
    ({"interval": "soon"}, "source 'rathaus': interval: 'soon' is not a duration"),
    ({"name": "local"}, "name must be 1-64 characters"),
    ({"authentication": "kerberos"}, "authentication: 'kerberos' is not one of bind, none"),
    ({"url": "ldap://dc1.rathaus.example"}, "would send passwords in clear text"),
    ({"user_filter": "(&(objectClass=user)(!(objectClass=computer))"}, "user_filter '(&(objectClass=user)"),
    ({"group_filter": "objectClass=group"}, "group_filter 'objectClass=group' is not an LDAP filter"),
])
def test_invalid_source_names_the_key(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    """Every mistake stops the start with a message that names the source and the key."""
    source = {**AD, **change}
    source = {key: value for key, value in source.items() if value is not None}
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, source)
    assert message in str(raised.value)
    assert "[directory] sources" in str(raised.value)


def test_missing_keys_and_duplicate_names(tmp_path: Path) -> None:
    """Required keys are named when missing; two sources may not share a name."""
    with pytest.raises(ConfigError, match="source 'rathaus': missing base_dn"):
        load(tmp_path, {key: value for key, value in AD.items() if key != "base_dn"})
    with pytest.raises(ConfigError, match="source names must be unique: rathaus"):
        load(tmp_path, AD, AD)


def test_plaintext_only_when_allowed(tmp_path: Path) -> None:
    """ldap:// without StartTLS is accepted with ``allow_plaintext_bind``, or when no password is ever sent."""
    allowed = load(tmp_path, {**AD, "url": "ldap://127.0.0.1:3389", "allow_plaintext_bind": True})
    assert allowed.directory.sources[0].allow_plaintext_bind
    anonymous = load(tmp_path, {key: value for key, value in {**AD, "url": "ldap://127.0.0.1:3389",
                                                              "authentication": "none"}.items()
                                if key not in {"bind_dn", "bind_password"}})
    assert anonymous.directory.sources[0].bind_dn is None


def test_password_file_is_read_when_needed_and_never_shown(tmp_path: Path) -> None:
    """``bind_password_file`` is read at use (so a rotated secret is picked up); passwords stay out of repr."""
    secret = tmp_path / "bind-password"
    secret.write_text("erstes-geheimnis\n")
    source_table = {key: value for key, value in AD.items() if key != "bind_password"}
    settings = load(tmp_path, {**source_table, "bind_password_file": str(secret)})
    source = settings.directory.sources[0]
    assert source.read_bind_password() == "erstes-geheimnis"
    secret.write_text("zweites-geheimnis\n")
    assert source.read_bind_password() == "zweites-geheimnis"
    assert "geheim" not in repr(load(tmp_path, AD).directory.sources[0])


def test_environment_takes_a_json_list(tmp_path: Path) -> None:
    """``IDP_DIRECTORY_SOURCES`` holds the same tables as JSON; ``IDP_DIRECTORY_SCHEDULE`` turns the loop off."""
    settings = load_settings(environ={"IDP_DIRECTORY_SOURCES": json.dumps([AD]), "IDP_DIRECTORY_SCHEDULE": "false"})
    assert settings.directory.sources[0].name == "rathaus" and settings.directory.schedule is False
    with pytest.raises(ConfigError, match="expected a JSON list"):
        load_settings(environ={"IDP_DIRECTORY_SOURCES": "rathaus"})


def test_reference_documents_every_source_key() -> None:
    """The generated configuration reference has a table of the source keys with their defaults."""
    text = reference_markdown()
    assert "### `[[directory.sources]]`" in text
    for key in ("url", "start_tls", "ca_file", "bind_password_file", "user_filter", "group_filter", "preset",
                "attributes", "authentication", "interval", "max_disable_share", "retention", "allow_plaintext_bind"):
        assert f"| `{key}` |" in text
    assert "| `retention` | `30d` |" in text and "| `base_dn` | (required) |" in text
