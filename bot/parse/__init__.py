"""The deduplicating parser and the one normaliser every source goes through."""

from bot.parse.dump import decode_dump, parse_dump, read_dump
from bot.parse.fingerprint import fingerprint
from bot.parse.hashtags import extract_hashtags
from bot.parse.model import Content, DumpPost, Entity
from bot.parse.normalise import normalise

__all__ = [
    "Content",
    "DumpPost",
    "Entity",
    "decode_dump",
    "extract_hashtags",
    "fingerprint",
    "normalise",
    "parse_dump",
    "read_dump",
]
