"""The rules directory, loaded and checked (`load`), compiled into a rule set (`ruleset`), and
watched for changes (`watch`)."""

from bot.config.load import (
    ChannelEntry,
    Config,
    ConfigError,
    json_schema,
    load_config,
    rules_directory,
    write_schema,
)

__all__ = ["ChannelEntry", "Config", "ConfigError", "json_schema", "load_config", "rules_directory",
           "write_schema"]
