"""The CLI's shared vocabulary: every command reads lists, sizes and segments through these types.

Bad values fail in click (one `Error:` line, exit 2) before any work. Checks that need the model
(a size against its expert count) stay in the library, which knows it.
"""

from __future__ import annotations

import click

from moeprint.errors import MoeprintError
from moeprint.select.sizes import GRAMMAR, Sizes, parse_sizes
from moeprint.types import ALL, SEGMENTS


class NameList(click.ParamType):
    """`a,b,c` -> ("a", "b", "c"): comma separated, blanks dropped (`""` is the empty list)."""

    name = "list"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):  # a default given as a tuple, or a value converted before
            return value
        return tuple(n for n in (v.strip() for v in str(value).split(",")) if n)


class SizesType(click.ParamType):
    """A sizes spec in the one grammar (moeprint.select.sizes), resolved later against the model."""

    name = "sizes"

    def convert(self, value, param, ctx):
        if isinstance(value, Sizes):
            return value
        try:
            return parse_sizes(value)
        except MoeprintError as e:
            self.fail(str(e), param, ctx)


NAMES = NameList()
SIZES = SizesType()
SEGMENT = click.Choice([*SEGMENTS, ALL])  # the token segments a ranking may use; `all` pools them


def _joined(ctx, param, value):
    """Repeated comma lists -> one list in order; None when the option is absent (so defaults apply)."""
    return None if not value else [n for names in value for n in names]


def names_option(*decls: str, **kwargs):
    """A comma-list option that may also be repeated (`--domains law,math` = `--domains law --domains math`)."""
    default = kwargs.pop("default", None)
    if default is not None:  # click would show a tuple default as "(frequency)"
        kwargs.update(default=(default,), help=f"{kwargs.get('help', '')}  [default: {default}]".strip())
    return click.option(*decls, multiple=True, type=NAMES, callback=_joined, **kwargs)


def domains_option(help: str, **kwargs):
    """`--domains`: the same comma list (or repeated option) in every command."""
    return names_option("--domains", help=f"{help} Comma-separated or repeated.", **kwargs)


def sizes_option(**kwargs):
    return click.option("--sizes", type=SIZES, help=f"Experts kept per layer: {GRAMMAR}.", **kwargs)


def count_option(*decls: str, minimum: int, default: int | None = None, help: str):
    """An integer option with its lower bound: a value below it fails in click, naming the option."""
    return click.option(
        *decls, type=click.IntRange(min=minimum), default=default, show_default=default is not None, help=help
    )


def max_tokens_option():
    """`--max-tokens`: the perplexity window of evaluate and sweep."""
    return count_option("--max-tokens", minimum=2, default=256, help="Perplexity window length in tokens.")
