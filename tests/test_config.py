"""Settings: one table of options, and everything that documents it agrees with it."""

from __future__ import annotations

import argparse
import re
import tomllib

import pytest

from logwatch import config
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
SAMPLE = ROOT / "contrib" / "relaywatch.toml"


def test_every_setting_is_an_option() -> None:
    assert set(config.field_names()) - {"config"} == {o.attr for o in config.OPTIONS}


@pytest.mark.parametrize("option", config.OPTIONS, ids=[o.name for o in config.OPTIONS])
def test_every_option_is_documented(option: config.Option) -> None:
    assert f"`--{option.name}" in README, f"README lacks --{option.name}"
    assert re.search(rf"^#? ?{re.escape(option.name)} = ", SAMPLE.read_text(), re.M), \
        f"contrib/relaywatch.toml lacks {option.name}"


def test_sample_config_is_valid_with_every_commented_key_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = SAMPLE.read_text()
    settings = config.settings(tomllib.loads(text), None, str(SAMPLE), text)
    assert settings.expire == 1800 and settings.postfix_map == ("hash:/var/lib/relaywatch/relay_clients",)
    uncommented = re.sub(r"^# ?([a-z-]+ = )", r"\1", text, flags=re.M)
    every = config.settings(tomllib.loads(uncommented), None, "sample", uncommented)
    assert every.relay_ctrl_dir == "/var/spool/relay-ctrl/allow"


def test_command_line_overrides_the_file() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(["--expire", "1h", "--log", "/b.log", "--relay-ctrl-mapped"])
    s = config.settings({"expire": "15m", "log": ["/a.log"], "relay-ctrl-dir": "/rc"}, args)
    assert (s.expire, s.log, s.relay_ctrl_dir, s.relay_ctrl_mapped) == (3600, ("/b.log",), "/rc", True)


@pytest.mark.parametrize("text, message", [
    ('expire = "30 minutes"', "f.toml:2: expire: '30 minutes' is not a duration"),
    ("max-entries = 0", "f.toml:2: max-entries: expected a whole number of at least 1"),
    ("max_entries = 5", "f.toml:2: max_entries: unknown key (did you mean max-entries?)"),
    ('relay-ctrl-mapped = "yes"', "f.toml:2: relay-ctrl-mapped: expected true or false"),
    ("log = 5", "f.toml:1: log: expected a string or a list of strings"),
    ('log-level = "loud"', "--log-level: 'loud'; expected one of debug, info, warning, error"),
    ('never = "10.0.0.0/33"', "--never: '10.0.0.0/33' is not a network"),
    ('dnsbl = ["bad zone"]', "--dnsbl: 'bad zone' is not a DNS zone"),
    ('resolver = "dns.example.test"', "--resolver: 'dns.example.test' is not ADDR[:PORT]"),
    ('relay-ctrl-expiry = "10m"', "--relay-ctrl-expiry: 10m is shorter than --expire 30m; expected at least that"),
])
def test_mistakes_name_file_line_and_key(text: str, message: str) -> None:
    body = ('log = "/var/log/dovecot.log"\n' if not text.startswith("log =") else "") + text + '\nrelay-ctrl-dir = "/rc"\n'
    with pytest.raises(config.ConfigError) as caught:
        config.settings(tomllib.loads(body), None, "f.toml", body)
    assert str(caught.value).startswith(message), str(caught.value)

