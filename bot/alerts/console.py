"""The built-in console destination: a rich panel per alert.

Channel text goes in as `rich.text.Text` pieces, never as markup, so `[bold red]` in a post is
shown as typed; control characters are dropped so a post cannot move the cursor or recolour the
terminal with escape sequences.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from bot.alerts.config import ConsoleDestination
from bot.alerts.http import Shared
from bot.alerts.model import AlertView, Sent
from bot.alerts.render import Span, card, layout

WIDTH = 1500  # characters of post text: a terminal is for a glance
BORDERS = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "blue"}

def to_text(spans: Iterable[Span]) -> Text:
    out = Text()
    for span in spans:
        if span.style == "bold":
            out.append(span.text, style="bold")
        elif span.style == "italic":
            out.append(span.text, style="italic")
        elif span.style == "link" and span.href:
            out.append(span.text, style=f"link {span.href}")
        else:
            out.append(span.text)
    return out


def panel(view: AlertView) -> Panel:
    body = to_text(layout(card(view, WIDTH), WIDTH * 2))
    return Panel(body, border_style=BORDERS.get(view.severity.lower(), "white"), title_align="left")


class ConsoleSender:
    def __init__(self, dest: ConsoleDestination, shared: Shared) -> None:
        self.destination = dest.name
        console = shared.console
        if isinstance(console, Console):
            self._console = console
        elif console is not None:
            self._console = Console(file=console, soft_wrap=False, highlight=False)
        else:
            self._console = Console(highlight=False)

    async def send(self, alert: AlertView) -> Sent:
        # highlight=False: rich's repr highlighter would colour numbers and URLs in channel text.
        self._console.print(panel(alert), highlight=False)
        return Sent(None)
