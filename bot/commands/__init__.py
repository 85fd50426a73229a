"""The subcommands that are more than a line of wiring; `bot.cli` puts them together."""
