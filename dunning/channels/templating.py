"""The templates' environment: one per templates folder and language, reading the wording from
the Babel catalogs (locale/<lang>/LC_MESSAGES/dunning.po) and compiling each message into the
templates (dunning/channels/inline.py), with a bytecode cache keyed by the wording. Every
channel that renders a document (email, letter, injunction) takes its environment from here."""

from __future__ import annotations

import hashlib
import io
from collections.abc import MutableMapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from jinja2 import (
    Environment,
    FileSystemBytecodeCache,
    FileSystemLoader,
    StrictUndefined,
    pass_eval_context,
)
from jinja2.bccache import Bucket
from jinja2.nodes import EvalContext
from markupsafe import Markup

from dunning.channels.formatting import elide
from dunning.channels.inline import COMPILED, Translate, plural_rules
from dunning.errors import DeliveryError
from dunning.resources import resource_dir


class _BytecodeCache(FileSystemBytecodeCache):
    """Compiled templates kept between processes, in the user's temporary folder (Jinja checks
    each against its source): compiling the email templates costs about a second of CPU in every
    process that renders. A cache that cannot be read or written is only slower."""

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def _bytecode_cache(wording: str) -> _BytecodeCache | None:
    """The cache of the templates compiled with one wording (a language's catalogs, by content:
    Jinja checks a template's source, not the catalog compiled into it)."""
    try:
        return _BytecodeCache(pattern=f"__jinja2_dunning_{wording}_%s.cache")
    except Exception:  # no safe temporary folder
        return None


_CATALOG = "LC_MESSAGES/dunning.po"


def _catalog_files(root: str, language: str) -> tuple[Path, ...]:
    """The shipped catalog of a language, then a templates folder's own, if it has one."""
    shipped = resource_dir("locale") / language / _CATALOG
    if not shipped.is_file():
        raise DeliveryError(f"no message catalog {shipped} for language {language!r}",
                            retryable=False)
    own = Path(root) / "locale" / language / _CATALOG
    return (shipped, own) if own.is_file() and own.resolve() != shipped.resolve() else (shipped,)


def _catalog(path: Path, language: str) -> Translations:
    """A `.po` catalog compiled in memory (no build step; fuzzy entries are left out, as
    `msgfmt` does)."""
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    mo = io.BytesIO()
    write_mo(mo, catalog)
    mo.seek(0)
    return Translations(mo, domain="dunning")


@lru_cache(maxsize=16)
def translations(root: str, language: str) -> NullTranslations:
    """The wording of a language: `<root>/locale/<lang>/LC_MESSAGES/dunning.po` when a templates
    folder of one's own has it, each message it lacks taken from the shipped catalog."""
    found: NullTranslations | None = None
    for path in _catalog_files(root, language):
        catalog = _catalog(path, language)
        if found is not None:
            catalog.add_fallback(found)
        found = catalog
    assert found is not None
    return found


class _Environment(Environment):
    """Templates compiled with one language's wording (see `inline.Translate`), with the
    filters of its plural rules."""

    def __init__(self, wording: NullTranslations, **options: Any) -> None:
        super().__init__(**options)
        self.wording = wording
        _install_gettext(self, wording)
        self.filters.update(plural_rules(wording))
        self.filters["elide"] = elide  # French: {{ "de"|elide(town) }} is "d'Angers"

    def compile(self, source: Any, name: str | None = None, filename: str | None = None,
                raw: bool = False, defer_init: bool = False) -> Any:
        if isinstance(source, str):
            source = self.parse(source, name, filename)
        source = Translate(self.wording).visit(source)
        return super().compile(source, name, filename, raw, defer_init)  # type: ignore[call-overload]

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as one dict, not Jinja's `ChainMap` over the environment's:
        every rendering copies them into its context, key by key through the `ChainMap` (a
        `KeyError` caught for each global: about 10 µs a template, 11 globals with gettext's).
        The environment's globals are all set in `__init__`, before any template is loaded."""
        return {**self.globals, **(d or {})}


@lru_cache(maxsize=16)
def environment(root: str, language: str | None = None) -> Environment:
    """The templates of a folder, with the wording of `language` (its message catalogs)."""
    if language:
        wording = translations(root, language)
        # The way messages are compiled in (`inline.Translate`) is part of the key: bytecode cached
        # by an earlier version would otherwise be used after an upgrade.
        digest = hashlib.sha1(f"{COMPILED}:{language}".encode())
        for path in _catalog_files(root, language):
            digest.update(path.read_bytes())
        key = digest.hexdigest()[:16]
    else:
        wording, key = NullTranslations(), "none"
    # Templates are read once per process (a daily run is one process): checking every file's
    # modification time at each message cost a tenth of the rendering.
    return _Environment(
        wording,
        loader=FileSystemLoader(root),
        undefined=StrictUndefined,
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
        bytecode_cache=_bytecode_cache(key),
        extensions=["jinja2.ext.i18n"],
    )


def _install_gettext(environment: Environment, wording: NullTranslations) -> None:
    """Jinja's new-style gettext (in HTML the translation is marked safe and its variables are
    escaped; a literal % is written %%) for the messages left to rendering (those `inline.Translate`
    cannot compile in), in one call where Jinja's own makes three."""

    def fill(eval_ctx: EvalContext, text: str, variables: dict[str, Any]) -> str:
        return (Markup(text) if eval_ctx.autoescape else text) % variables

    @pass_eval_context
    def gettext(eval_ctx: EvalContext, message: str, **variables: Any) -> str:
        return fill(eval_ctx, wording.gettext(message), variables)

    @pass_eval_context
    def ngettext(eval_ctx: EvalContext, singular: str, plural: str, num: int,
                 **variables: Any) -> str:
        variables.setdefault("num", num)
        return fill(eval_ctx, wording.ngettext(singular, plural, num), variables)

    @pass_eval_context
    def pgettext(eval_ctx: EvalContext, context: str, message: str, **variables: Any) -> str:
        variables.setdefault("context", context)
        return fill(eval_ctx, str(wording.pgettext(context, message)), variables)

    @pass_eval_context
    def npgettext(eval_ctx: EvalContext, context: str, singular: str, plural: str, num: int,
                  **variables: Any) -> str:
        variables.setdefault("context", context)
        variables.setdefault("num", num)
        return fill(eval_ctx, str(wording.npgettext(context, singular, plural, num)),
                    variables)

    environment.globals.update(_=gettext, gettext=gettext, ngettext=ngettext, pgettext=pgettext,
                               npgettext=npgettext)
    environment.newstyle_gettext = True  # type: ignore[attr-defined]
