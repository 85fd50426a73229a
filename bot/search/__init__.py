"""Full-text search over the archive: stemmed tokens, the query language, the index on both stores."""

from bot.search.engine import highlight, search
from bot.search.model import Filters, Hit, Order, QueryError, Results

__all__ = ["Filters", "Hit", "Order", "QueryError", "Results", "highlight", "search"]
