"""The tables `lcp` prints lists in, fitted to the width they are drawn at (80 columns when piped): ids and
names are never cut nor wrapped; the least needed columns are left out first (a caption says which), then
the others fold (at spaces where they can, headers never inside a word)."""

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# A column that folds keeps at least this much of its longest word on one line (a date, a phase), when its
# header's longest word is shorter.
_WORD_KEPT = 16


@dataclass(frozen=True)
class Column:
    """One column of a list. `key`: an id or a name, never cut: whole on one line (a name of several words
    may wrap between them). `drop`: left out when the table does not fit otherwise, the lowest first (None:
    never left out)."""

    header: str
    key: bool = False
    drop: int | None = None
    justify: str = "left"


Cell = str | Text  # a str is rich markup: escape stored text with cli.show.shown


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text.from_markup(cell)


def _longest_word(text: str) -> int:
    return max((len(word) for word in text.split()), default=0)


class ListTable:
    """A list as a rich renderable: it lays itself out for the width it is given when drawn."""

    def __init__(
        self,
        columns: Sequence[Column],
        rows: Sequence[Sequence[Cell]],
        *,
        title: str | Text | None = None,
        empty: str | None = "(none)",
    ) -> None:
        self.columns = list(columns)
        self.rows = [[_text(cell) for cell in row] for row in rows]
        if not self.rows and empty is not None:
            self.rows = [[Text(empty), *[Text("") for _ in self.columns[1:]]]]
        self.title = title

    def _natural(self, index: int) -> int:
        """The widest line of the column, its header's included."""
        lines = [self.columns[index].header]
        for row in self.rows:
            lines += row[index].plain.splitlines() or [""]
        return max(Text(line).cell_len for line in lines)

    def _least(self, index: int, squeezed: bool = False) -> int:
        """How narrow the column may fold: an id or name never; a header never inside a word, unless
        `squeezed` (to keep the ids and names whole)."""
        column = self.columns[index]
        if column.key:
            return self._longest_word(index) if self._spaced(index) else self._natural(index)
        if squeezed:
            return 1
        return max(_longest_word(column.header), min(self._longest_word(index), _WORD_KEPT), 1)

    def _longest_word(self, index: int) -> int:
        return max((_longest_word(row[index].plain) for row in self.rows), default=0)

    def _spaced(self, index: int) -> bool:
        """Whether a cell of the column holds several words (a name such as "Customer Support")."""
        return any(len(row[index].plain.split()) > 1 for row in self.rows)

    def _table(self, kept: Sequence[int], widths: dict[int, int], fold_keys: bool) -> Table:
        table = Table(box=box.SIMPLE_HEAD, title=self.title, title_justify="left")
        for index in kept:
            column = self.columns[index]
            whole = column.key and not fold_keys and not self._spaced(index)
            table.add_column(
                column.header,
                justify=column.justify,  # type: ignore[arg-type]
                no_wrap=whole,
                overflow="fold",
                width=widths.get(index),
            )
        for row in self.rows:
            table.add_row(*(row[index] for index in kept))
        left_out = [self.columns[index].header for index in range(len(self.columns)) if index not in kept]
        if left_out:
            table.caption = f"(left out at this width: {', '.join(left_out)})"
            table.caption_justify = "left"
        return table

    def fitted(self, width: int) -> Table:
        """The table for `width` columns: the columns left out by `drop` until the rest fits on one line
        each; when it does not even then, the fewest left out with which the others fold to fit (never
        below what `_least` allows); then the others fold inside words; and when even the ids and names
        alone do not fit, they fold rather than lose characters."""
        droppable = sorted(
            (i for i, c in enumerate(self.columns) if c.drop is not None and not c.key),
            key=lambda i: self.columns[i].drop or 0,
        )
        kept = list(range(len(self.columns)))
        ways = [kept] + [[i for i in kept if i not in droppable[: n + 1]] for n in range(len(droppable))]
        fits = [self._fit(way, width) for way in ways]
        for way, (table, folded) in zip(ways, fits, strict=True):
            if table is not None and not folded:
                return self._refilled(way, droppable, width) or table
        for table, _ in fits:
            if table is not None:
                return table
        return self._squeezed(ways[-1], width)

    def _refilled(self, kept: list[int], droppable: list[int], width: int) -> Table | None:
        """`kept` with the columns left out put back, the most needed first, each that still fits on one
        line: leaving out `created` may make room for a narrow `note` that was left out before it."""
        refilled, table = list(kept), None
        for index in reversed(droppable):
            if index in refilled:
                continue
            trial = sorted([*refilled, index])
            fitted, folded = self._fit(trial, width)
            if fitted is not None and not folded:
                refilled, table = trial, fitted
        return table

    def _room(self, kept: Sequence[int], width: int) -> int:
        """What `width` leaves for the cells of the `kept` columns, after borders and padding."""
        probe = self._table(kept, {}, fold_keys=False)
        return width - probe._extra_width - sum(probe._get_padding_width(i) for i in range(len(kept)))

    def _fit(self, kept: Sequence[int], width: int) -> tuple[Table | None, bool]:
        """The `kept` columns in `width`: on one line each (False), folded within `_least` (True), or None."""
        room = self._room(kept, width)
        natural = {i: self._natural(i) for i in kept}
        if sum(natural.values()) <= room:
            return self._table(kept, {}, fold_keys=False), False
        least = {i: self._least(i) for i in kept}
        if sum(least.values()) <= room:
            return self._table(kept, _narrowed(natural, least, room), fold_keys=False), True
        return None, True

    def _squeezed(self, kept: Sequence[int], width: int) -> Table:
        """The ids and names whole, the other columns folded as narrow as it takes; else everything folds."""
        room = self._room(kept, width)
        natural = {i: self._natural(i) for i in kept}
        squeezed = {i: self._least(i, squeezed=True) for i in kept}
        if sum(squeezed.values()) <= room:
            return self._table(kept, _narrowed(natural, squeezed, room), fold_keys=False)
        return self._table(kept, {}, fold_keys=True)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.fitted(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.fitted(options.max_width))


def _narrowed(natural: dict[int, int], least: dict[int, int], room: int) -> dict[int, int]:
    """Widths that add up to `room`: the widest narrowable column loses a character at a time, never going
    below its least."""
    widths = dict(natural)
    while sum(widths.values()) > room:
        narrowable = [i for i in widths if widths[i] > least[i]]
        widest = max(narrowable, key=lambda i: widths[i])
        widths[widest] -= 1
    return {i: width for i, width in widths.items() if width != natural[i]}
