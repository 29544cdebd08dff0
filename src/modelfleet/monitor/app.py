"""The `modelfleet top` screen (textual): a header, a status line, the workers and the resident
models, redrawn after every poll. Polling runs in one textual worker that never dies: a server that
cannot be read turns into a status line, and the next poll tries again."""

from __future__ import annotations

import asyncio
import time

import httpx
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from modelfleet.monitor.sources import Rates, Snapshot, Source, SourceError, rates
from modelfleet.monitor.view import (
    MODEL_COLUMNS,
    WORKER_COLUMNS,
    SortKey,
    header,
    model_rows,
    worker_rows,
)

# columns shown left-aligned; the others are numbers, right-aligned
_TEXT_COLUMNS = {"Worker", "Device", "State", "Memory (used / budget)", "Model", "Version", "Pinned"}


class TopApp(App[None]):
    """Live view of one server. `interval_s` is the time between the end of a poll and the next."""

    TITLE = "modelfleet top"
    CSS = """
    #header { height: 2; background: $boost; padding: 0 1; }
    #status { height: 1; padding: 0 1; color: $text-muted; }
    #status.error { color: $error; }
    #workers { height: auto; max-height: 40%; margin-bottom: 1; }
    #models { height: 1fr; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("s", "sort", "Sort"),
        Binding("p", "pause", "Pause"),
    ]

    def __init__(self, source: Source, interval_s: float = 1.0) -> None:
        super().__init__()
        self.source = source
        self.interval_s = interval_s
        self.sort_key = SortKey.REQUESTS
        self.paused = False
        self.snapshot: Snapshot | None = None
        self.rates = Rates()
        self.error: str | None = None
        self.polls = 0  # completed polls, read or failed (tests wait on it)
        self._error_since: float | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield Static(id="status")
        yield DataTable(id="workers", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="models", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#workers", DataTable).add_columns(*WORKER_COLUMNS)
        self.query_one("#models", DataTable).add_columns(*MODEL_COLUMNS)
        self.query_one("#header", Static).update(Text(f"modelfleet top: {self.source.url}"))
        self._show_status()
        self.run_worker(self._poll_forever(), name="poll", exclusive=True)

    async def _poll_forever(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval_s)

    async def poll_once(self) -> None:
        """One fetch; its snapshot or its error is shown (a paused screen only updates its status)."""
        try:
            snapshot = await self.source.fetch()
        except SourceError as exc:
            self._failed(str(exc))
        except Exception as exc:  # a monitor must not die on a server it does not understand
            self._failed(f"reading {self.source.url} failed: {type(exc).__name__}: {exc}")
        else:
            self.rates = rates(self.snapshot, snapshot)
            self.snapshot, self.error, self._error_since = snapshot, None, None
            if not self.paused:
                self._redraw()
        self.polls += 1
        self._show_status()

    def _failed(self, message: str) -> None:
        self.error = message
        if self._error_since is None:
            self._error_since = time.monotonic()

    # -- drawing --------------------------------------------------------------------------------------------

    def _redraw(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        self.query_one("#header", Static).update(Text("\n".join(header(self.source.url, snap, self.rates))))
        _fill(self.query_one("#workers", DataTable), WORKER_COLUMNS, worker_rows(snap, self.rates))
        _fill(
            self.query_one("#models", DataTable), MODEL_COLUMNS, model_rows(snap, self.rates, self.sort_key)
        )

    def _show_status(self) -> None:
        parts = []
        if self.error is not None:
            since = time.monotonic() - (self._error_since or time.monotonic())
            parts.append(f"{self.error}; retrying every {self.interval_s:g} s")
            if self.snapshot is not None:
                parts.append(f"figures below are {since:.0f} s old")
        elif self.snapshot is None:
            parts.append(f"connecting to {self.source.url}\u2026")
        else:
            parts.append(f"live, every {self.interval_s:g} s")
            parts.extend(self.snapshot.notes)
        if self.paused:
            parts.insert(0, "PAUSED (p to resume)")
        parts.append(f"models by {self.sort_key.value}")
        status = self.query_one("#status", Static)
        status.set_class(self.error is not None, "error")
        status.update(Text(" \u00b7 ".join(parts)))

    # -- keys -------------------------------------------------------------------------------------------------

    def action_sort(self) -> None:
        self.sort_key = self.sort_key.next()
        self._redraw()
        self._show_status()

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self._redraw()
        self._show_status()


def _fill(table: DataTable[Text], columns: tuple[str, ...], rows: list[tuple[str, list[str]]]) -> None:
    """Replace the rows, keeping the cursor on the same line number."""
    row = table.cursor_row
    table.clear()
    for key, cells in rows:
        table.add_row(
            *(
                Text(c) if col in _TEXT_COLUMNS else Text(c, justify="right")
                for col, c in zip(columns, cells, strict=True)
            ),
            key=key,
        )
    if rows:
        table.move_cursor(row=min(row, len(rows) - 1))


def run(url: str, interval_s: float, timeout_s: float, headers: dict[str, str]) -> None:
    """Run the monitor in this terminal until q."""

    async def main() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=timeout_s, headers=headers) as client:
            await TopApp(Source(client), interval_s).run_async()

    asyncio.run(main())
