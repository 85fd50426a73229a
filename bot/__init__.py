"""tgsentinel: a live monitor for public Telegram channels."""

__version__ = "0.1.0"
