"""Settings: defaults, the TOML file, the environment, and the checks that stop a bad configuration.

Pure unit tests of ``idp.config``: nothing here touches a database or the app.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from idp.config import ConfigError, Settings, env_name, load_settings, parse_duration, reference_markdown

ROOT = Path(__file__).resolve().parent.parent
SECRET = "dGVzdC1zZWNyZXQta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMTIzNDU2Nzg5MA=="
KEK = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "idp.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def config_error(environ: dict[str, str] | None = None, path: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ or {}, path=path)
    return str(info.value)


def test_defaults_without_file_or_environment() -> None:
    """With nothing configured every setting has its declared default and the issuer is the local server."""
    settings = load_settings(environ={})
    assert settings.issuer == "http://127.0.0.1:8000"
    assert settings.env == "development"
    assert settings.secret_key is None and settings.keys.encryption_key is None
    assert settings.tokens.code_lifetime == timedelta(seconds=60)
    assert settings.tokens.access_token_lifetime == timedelta(minutes=10)
    assert settings.tokens.offline_token_lifetime == timedelta(days=30)
    assert settings.tokens.pkce == "public"
    assert settings.keys.rsa_bits == 3072
    assert settings.session.absolute_lifetime == timedelta(hours=10)
    assert settings.session.idle_timeout == timedelta(hours=1)
    assert settings.server.trusted_proxies == ()
    assert settings.is_embedded_database and settings.database_url.endswith("idp.sqlite3")
    for section in dataclasses.fields(Settings):
        value = getattr(settings, section.name)
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                assert getattr(value, f.name) == f.default, f"[{section.name}] {f.name}"


def test_every_setting_is_documented() -> None:
    """Each setting carries a description, so the generated reference has no empty rows (STYLE 7)."""
    settings = load_settings(environ={})
    for section in dataclasses.fields(Settings):
        value = getattr(settings, section.name)
        fields = dataclasses.fields(value) if dataclasses.is_dataclass(value) else [section]
        for f in fields:
            assert len(f.metadata["doc"].strip()) > 10, f.name


def test_toml_file_values(tmp_path: Path) -> None:
    """Values from the TOML file, top-level and in sections, are parsed into typed settings."""
    path = write_toml(tmp_path, """
issuer = "https://login.musterstadt.de"
theme = "musterstadt"

[server]
port = 9000
trusted_proxies = ["127.0.0.1", "10.0.0.2"]

[database]
url = "postgresql+psycopg://idp@127.0.0.1/idp"

[tokens]
access_token_lifetime = "5m"
id_token_lifetime = 300
code_lifetime = "30s"
pkce = "all"

[keys]
rsa_bits = 4096
""")
    settings = load_settings(environ={}, path=path)
    assert settings.issuer == "https://login.musterstadt.de"
    assert settings.theme == "musterstadt"
    assert settings.server.port == 9000
    assert settings.server.trusted_proxies == ("127.0.0.1", "10.0.0.2")
    assert settings.database_url == "postgresql+psycopg://idp@127.0.0.1/idp"
    assert not settings.is_embedded_database
    assert settings.tokens.access_token_lifetime == timedelta(minutes=5)
    assert settings.tokens.id_token_lifetime == timedelta(seconds=300)
    assert settings.tokens.code_lifetime == timedelta(seconds=30)
    assert settings.tokens.pkce == "all"
    assert settings.keys.rsa_bits == 4096


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    """``IDP_CONFIG`` names the TOML file when no path is passed."""
    path = write_toml(tmp_path, "[server]\nport = 9001\n")
    assert load_settings(environ={"IDP_CONFIG": path}).server.port == 9001


def test_environment_overrides_toml(tmp_path: Path) -> None:
    """``IDP_SECTION_KEY`` wins over the file, and command-line overrides win over both."""
    path = write_toml(tmp_path, """
issuer = "https://file.example"
[server]
port = 9000
trusted_proxies = ["127.0.0.1"]
[tokens]
access_token_lifetime = "5m"
""")
    environ = {
        "IDP_ISSUER": "https://env.example",
        "IDP_SERVER_PORT": "9100",
        "IDP_SERVER_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.2",
        "IDP_TOKENS_ACCESS_TOKEN_LIFETIME": "2m",
    }
    settings = load_settings(environ=environ, path=path)
    assert settings.issuer == "https://env.example"
    assert settings.server.port == 9100
    assert settings.server.trusted_proxies == ("10.0.0.1", "10.0.0.2")
    assert settings.tokens.access_token_lifetime == timedelta(minutes=2)
    overridden = load_settings(environ=environ, path=path, overrides={"server": {"port": 9200}})
    assert overridden.server.port == 9200


def test_environment_variable_names() -> None:
    """Section keys map to ``IDP_SECTION_KEY`` and top-level keys to ``IDP_KEY``."""
    assert env_name("", "issuer") == "IDP_ISSUER"
    assert env_name("tokens", "code_lifetime") == "IDP_TOKENS_CODE_LIFETIME"


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("5m", 300), ("10h", 36000), ("30d", 2592000), ("45", 45), (" 2m ", 120), ("1.5m", 90),
    (120, 120),
])
def test_durations(text: object, seconds: int) -> None:
    """Durations are written with s, m, h or d (or as plain seconds)."""
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0s", "-5m", "5w", "5 weeks", "m", "1e3", "5mm", True, None, [5]])
def test_invalid_durations(text: object) -> None:
    """Zero, negative, unknown units and non-duration types are refused."""
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duration_from_environment() -> None:
    """A duration in the environment is parsed like one in the file."""
    settings = load_settings(environ={"IDP_SESSION_ABSOLUTE_LIFETIME": "8h", "IDP_SESSION_IDLE_TIMEOUT": "15m"})
    assert settings.session.absolute_lifetime == timedelta(hours=8)
    assert settings.session.idle_timeout == timedelta(minutes=15)


def test_unknown_toml_key_is_named(tmp_path: Path) -> None:
    """A misspelt top-level key stops the start and is named in the message."""
    message = config_error(path=write_toml(tmp_path, 'isuer = "https://idp.example"\n'))
    assert "isuer" in message


def test_unknown_key_in_section_is_named(tmp_path: Path) -> None:
    """A misspelt key inside a known section is named with its section."""
    message = config_error(path=write_toml(tmp_path, '[tokens]\nacces_token_lifetime = "5m"\n'))
    assert "[tokens] acces_token_lifetime" in message


def test_unknown_section_is_named(tmp_path: Path) -> None:
    """An unknown section is refused, not ignored."""
    message = config_error(path=write_toml(tmp_path, '[tokenz]\ncode_lifetime = "30s"\n'))
    assert "tokenz" in message


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    """A section name used as a plain value is refused."""
    message = config_error(path=write_toml(tmp_path, "server = 8000\n"))
    assert "[server]" in message


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    """Every offending key appears in one message, so the operator fixes them in one go."""
    message = config_error(environ={"IDP_SERVR_PORT": "1"}, path=write_toml(tmp_path, "colour = 1\n[x]\ny = 2\n"))
    assert "colour" in message and "IDP_SERVR_PORT" in message and "x" in message


def test_unknown_environment_variable_is_named() -> None:
    """An ``IDP_*`` variable that is no setting stops the start; other variables are ignored."""
    message = config_error({"IDP_TOKENS_LIFETIME": "5m", "PATH": "/usr/bin", "IDPX": "1"})
    assert "IDP_TOKENS_LIFETIME" in message
    assert "PATH" not in message and "IDPX" not in message


@pytest.mark.parametrize(("environ", "named"), [
    ({"IDP_SERVER_PORT": "eighty"}, "[server] port"),
    ({"IDP_SERVER_PORT": "0"}, "IDP_SERVER_PORT"),
    ({"IDP_ENV": "prod"}, "env"),
    ({"IDP_TOKENS_PKCE": "none"}, "[tokens] pkce"),
    ({"IDP_TOKENS_ACCESS_TOKEN_LIFETIME": "ten minutes"}, "[tokens] access_token_lifetime"),
    ({"IDP_KEYS_RSA_BITS": "3072.5"}, "[keys] rsa_bits"),
    ({"IDP_ISSUER": "idp.example"}, "issuer"),
    ({"IDP_ISSUER": "https://idp.example/"}, "issuer"),
    ({"IDP_ISSUER": "https://idp.example?tenant=1"}, "issuer"),
    ({"IDP_ISSUER": "https://idp.example#x"}, "issuer"),
    ({"IDP_ISSUER": "ftp://idp.example"}, "issuer"),
])
def test_invalid_value_is_named(environ: dict[str, str], named: str) -> None:
    """An invalid value is refused with the key (and its variable) in the message."""
    message = config_error(environ)
    assert named in message
    assert "invalid value" in message


@pytest.mark.parametrize(("toml", "named"), [
    ("[server]\nport = true\n", "[server] port"),
    ('[server]\nport = "80a"\n', "[server] port"),
    ("[server]\ntrusted_proxies = [1, 2]\n", "[server] trusted_proxies"),
    ("[session]\nidle_timeout = -1\n", "[session] idle_timeout"),
    ("theme = 5\n", "theme"),
])
def test_invalid_toml_value_is_named(tmp_path: Path, toml: str, named: str) -> None:
    """Wrongly typed values in the file are refused, not coerced."""
    assert named in config_error(path=write_toml(tmp_path, toml))


def test_broken_or_missing_file(tmp_path: Path) -> None:
    """A file that is not TOML or does not exist is a configuration error, not a crash."""
    assert "not valid TOML" in config_error(path=write_toml(tmp_path, "[server\nport = 1\n"))
    assert "does not exist" in config_error(path=str(tmp_path / "missing.toml"))


def test_production_requires_https_issuer_and_secrets() -> None:
    """Production refuses an http issuer, a generated secret key and a generated key-encryption key."""
    message = config_error({"IDP_ENV": "production", "IDP_ISSUER": "http://127.0.0.1:8000"})
    assert "issuer must be https" in message
    assert "secret_key" in message
    assert "encryption_key" in message
    message = config_error({"IDP_ENV": "production", "IDP_ISSUER": "https://idp.example",
                            "IDP_KEYS_ENCRYPTION_KEY": KEK})
    assert "secret_key" in message and "encryption_key" not in message and "issuer" not in message
    message = config_error({"IDP_ENV": "production", "IDP_ISSUER": "https://idp.example", "IDP_SECRET_KEY": SECRET})
    assert "encryption_key" in message and "secret_key (" not in message


def test_production_with_everything_set(tmp_path: Path) -> None:
    """Production starts with an https issuer and both secrets, given directly or as files."""
    settings = load_settings(environ={"IDP_ENV": "production", "IDP_ISSUER": "https://idp.example",
                                      "IDP_SECRET_KEY": SECRET, "IDP_KEYS_ENCRYPTION_KEY": KEK})
    assert settings.env == "production" and settings.is_https
    secret_file, kek_file = tmp_path / "secret", tmp_path / "kek"
    secret_file.write_text(SECRET)
    kek_file.write_text(KEK)
    settings = load_settings(environ={"IDP_ENV": "production", "IDP_ISSUER": "https://idp.example",
                                      "IDP_SECRET_KEY_FILE": str(secret_file),
                                      "IDP_KEYS_ENCRYPTION_KEY_FILE": str(kek_file)})
    assert settings.secret_key_file == str(secret_file)


@pytest.mark.parametrize("value", ["61s", "2m", "1h"])
def test_code_lifetime_over_a_minute_refused(value: str) -> None:
    """Authorization codes live at most 60 s (ASVS 10.4.3 L3; security case 14)."""
    assert "code_lifetime" in config_error({"IDP_TOKENS_CODE_LIFETIME": value})


def test_code_lifetime_of_a_minute_accepted() -> None:
    """Exactly 60 s is the longest accepted code lifetime."""
    assert load_settings(environ={"IDP_TOKENS_CODE_LIFETIME": "1m"}).tokens.code_lifetime == timedelta(seconds=60)


@pytest.mark.parametrize("bits", ["2048", "3071", "0", "-4096"])
def test_small_rsa_keys_refused(bits: str) -> None:
    """RSA signing keys below 3072 bits are refused (BSI TR-02102-1)."""
    assert "rsa_bits" in config_error({"IDP_KEYS_RSA_BITS": bits})


def test_idle_timeout_longer_than_session_refused() -> None:
    """An idle timeout beyond the absolute session lifetime makes no sense and is refused."""
    message = config_error({"IDP_SESSION_ABSOLUTE_LIFETIME": "1h", "IDP_SESSION_IDLE_TIMEOUT": "2h"})
    assert "idle_timeout" in message


def test_issuer_derived_from_server_address(tmp_path: Path) -> None:
    """Without an issuer, it is ``http://HOST:PORT`` of ``[server]``, from the file or the environment."""
    assert load_settings(environ={"IDP_SERVER_PORT": "9000"}).issuer == "http://127.0.0.1:9000"
    path = write_toml(tmp_path, '[server]\nhost = "localhost"\nport = 9443\n')
    assert load_settings(environ={}, path=path).issuer == "http://localhost:9443"
    assert load_settings(environ={"IDP_SERVER_PORT": "9500"}, path=path).issuer == "http://localhost:9500"
    explicit = load_settings(environ={"IDP_ISSUER": "https://idp.example"}, path=path)
    assert explicit.issuer == "https://idp.example" and explicit.server.port == 9443


@pytest.mark.parametrize(("host", "issuer"), [
    ("0.0.0.0", "http://127.0.0.1:8000"),
    ("::", "http://127.0.0.1:8000"),
    ("::1", "http://[::1]:8000"),
    ("localhost", "http://localhost:8000"),
])
def test_derived_issuer_is_a_usable_url(host: str, issuer: str) -> None:
    """A wildcard listen address becomes 127.0.0.1 and an IPv6 literal gets brackets (RFC 3986 3.2.2)."""
    assert load_settings(environ={"IDP_SERVER_HOST": host}).issuer == issuer


@pytest.mark.parametrize("issuer", ["http://idp.example", "http://10.0.0.5:8000", "http://127.0.0.1.evil.example"])
def test_http_issuer_only_on_this_machine(issuer: str) -> None:
    """Plain http is refused for an issuer reachable from elsewhere (RFC 6749 3.1 requires TLS)."""
    assert "issuer" in config_error({"IDP_ISSUER": issuer})


def test_derived_issuer_for_public_host_needs_explicit_issuer() -> None:
    """Listening on a public name without an issuer would publish an http issuer, so it is refused."""
    assert "issuer" in config_error({"IDP_SERVER_HOST": "idp.example"})
    settings = load_settings(environ={"IDP_SERVER_HOST": "idp.example", "IDP_ISSUER": "https://idp.example"})
    assert settings.issuer == "https://idp.example"


def test_reference_lists_every_setting() -> None:
    """The generated reference has one row per setting, with its environment variable."""
    text = reference_markdown()
    settings = load_settings(environ={})
    for section in dataclasses.fields(Settings):
        value = getattr(settings, section.name)
        if dataclasses.is_dataclass(value):
            assert f"## [{section.name}]" in text
            for f in dataclasses.fields(value):
                assert f"| `{f.name}` | `{env_name(section.name, f.name)}` |" in text
        else:
            assert f"| `{section.name}` | `{env_name('', section.name)}` |" in text


def test_docs_match_generated_reference() -> None:
    """docs/configuration.md is exactly what ``idp config reference`` prints, so docs and code agree."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert text.rstrip("\n") == reference_markdown().rstrip("\n")
