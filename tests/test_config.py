"""Deployment settings: flag > TRIPWIRE_* environment > rules settings > default, read once."""

from __future__ import annotations

import pytest

from tripwire.config import ConfigError, cluster_config
from tripwire.errors import RulesError
from tripwire.rules import parse_rules

DSN = "postgresql://tripwire@127.0.0.1:15432/tripwire"


def test_each_setting_comes_from_the_first_place_that_gives_it() -> None:
    rules = parse_rules("settings: {topic: shop-events, group: shop}\ntriggers: {t: {when: x}}\n")
    env = {"TRIPWIRE_KAFKA": "127.0.0.1:9092", "TRIPWIRE_POSTGRES": DSN, "TRIPWIRE_GROUP": "from-env"}
    config = cluster_config({"topic": None, "group": None, "kafka": "10.0.0.1:9092"}, rules, env)
    assert (config.kafka, config.topic, config.group, config.postgres, config.schema) == (
        "10.0.0.1:9092", "shop-events", "from-env", DSN, "tripwire",
    )  # fmt: skip
    assert config.described() == {
        "kafka": "flag", "topic": "rules", "postgres": "environment", "group": "environment", "schema": "default",
    }  # fmt: skip
    plain = cluster_config({}, parse_rules("triggers: {t: {when: x}}\n"), env)
    assert (plain.topic, plain.sources["topic"]) == ("tripwire-events", "default")


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({}, {"TRIPWIRE_POSTGRES": DSN}, "--kafka (or TRIPWIRE_KAFKA): required"),
        ({"kafka": "k:9092"}, {}, "--postgres (or TRIPWIRE_POSTGRES): required"),
        ({"kafka": "k:9092", "postgres": "/var/lib/data"}, {}, "expected a postgresql:// connection string"),
        ({"kafka": " ", "postgres": DSN}, {}, "--kafka (or TRIPWIRE_KAFKA): is empty"),
    ],
)
def test_a_missing_or_unusable_setting_names_its_flag_and_variable(
    flags: dict[str, str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cluster_config(flags, parse_rules("triggers: {t: {when: x}}\n"), env)


@pytest.mark.parametrize(("setting", "value"), [("topic", "bad topic"), ("topic", "a" * 250), ("group", "")])
def test_names_in_the_rules_settings_are_checked(setting: str, value: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(f"settings: {{{setting}: '{value}'}}\ntriggers: {{t: {{when: x}}}}\n")
    assert f"settings.{setting}" in str(caught.value)
