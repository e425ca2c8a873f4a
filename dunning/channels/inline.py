"""Messages compiled into the templates: each message with a constant text (`_("…")`,
`{% trans %}`, with or without a plural) is put into the compiled template in its translation, as
Jinja's new-style gettext would render it (in HTML the text is marked safe and its variables
escaped): calls from a template cost microseconds each, and an email has about 40 messages."""

from __future__ import annotations

import gettext
import re
from collections.abc import Callable
from typing import Any

from babel.support import NullTranslations
from jinja2 import nodes
from jinja2.visitor import NodeTransformer

# Change when `Translate` compiles messages differently: it is part of the bytecode cache's key.
COMPILED = "inline-2-plurals"

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%|%")
_NPLURALS = re.compile(r"nplurals\s*=\s*(\d+)")
# The filter of the rule of the catalog at a place in the chain of fallbacks, and of no catalog
_RULE = "_plural_form_{}"
_NO_CATALOG = "_plural_form"
# The form chosen, in the `{% with %}` around a plural's forms
_CHOSEN = "_plural_form_chosen"


def _no_catalog(n: Any) -> int:
    """The form gettext chooses for a message no catalog has: the message id when n is 1."""
    return 0 if n == 1 else 1


def _chain(wording: NullTranslations) -> list[gettext.NullTranslations] | None:
    """The catalogs gettext looks a message up in, in order; None when one of them is not a
    catalog whose lookup is known here."""
    chain: list[gettext.NullTranslations] = []
    found: gettext.NullTranslations | None = wording
    while found is not None:
        if not isinstance(found, (NullTranslations, gettext.GNUTranslations)):
            return None
        chain.append(found)
        found = getattr(found, "_fallback", None)
    return chain


def plural_rules(wording: NullTranslations) -> dict[str, Callable[[Any], int]]:
    """The filters `Translate` chooses a plural's form with: each catalog's own rule (its
    Plural-Forms, as gettext evaluates it), and the rule of messages no catalog has."""
    rules: dict[str, Callable[[Any], int]] = {_NO_CATALOG: _no_catalog}
    for place, catalog in enumerate(_chain(wording) or ()):
        rules[_RULE.format(place)] = catalog.plural  # type: ignore[attr-defined]
    return rules


class Translate(NodeTransformer):
    """Puts each message with a constant text into the compiled template in its translation.

    A message written out (`{{ _(…) }}`, `{% trans %}`) becomes the template data and outputs it
    would have been written as inline, so that it renders as fast as a template in one language
    (formatting it with `%` at each rendering cost about 0.1 ms a message); elsewhere, the
    translation formatted with its variables. A plural written out becomes a `{% with %}` of the
    form the catalog's rule chooses for its count and an `{% if %}` over its forms, each inlined;
    elsewhere, a conditional expression over its forms formatted."""

    def __init__(self, wording: NullTranslations) -> None:
        self.wording = wording
        self._catalogs: list[tuple[dict[Any, str], set[str], int]] | None = None

    def _translation(self, node: nodes.Node) -> tuple[str, dict[str, nodes.Expr]] | None:
        """The translated text of a constant message, and its variables; None for anything
        else (a plural, a text computed at rendering)."""
        if not (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name)):
            return None
        name = node.node.name
        texts = [a.value for a in node.args
                 if isinstance(a, nodes.Const) and isinstance(a.value, str)]
        if (name not in ("_", "gettext", "pgettext") or node.dyn_args or node.dyn_kwargs
                or len(texts) != len(node.args) or len(texts) != (2 if name == "pgettext" else 1)):
            return None
        variables: dict[str, nodes.Expr] = {v.key: self.visit(v.value) for v in node.kwargs}
        if name == "pgettext":
            variables = {"context": nodes.Const(texts[0])} | variables
            return str(self.wording.pgettext(*texts)), variables
        return self.wording.gettext(texts[0]), variables

    def _lookup(self) -> list[tuple[dict[Any, str], set[str], int]] | None:
        """Each catalog of the chain: its messages, the ids of its plurals, its number of
        forms (None when the chain holds something else than catalogs)."""
        if self._catalogs is None:
            chain = _chain(self.wording)
            if chain is None:
                return None
            self._catalogs = []
            for catalog in chain:
                messages: dict[Any, str] = getattr(catalog, "_catalog", {})
                info: dict[str, str] = getattr(catalog, "_info", {})
                declared = _NPLURALS.search(info.get("plural-forms", ""))
                self._catalogs.append((messages, {k[0] for k in messages if isinstance(k, tuple)},
                                       int(declared.group(1)) if declared else 2))
        return self._catalogs

    def _plural(self, node: nodes.Node) -> tuple[str, list[str], nodes.Expr,
                                                 dict[str, nodes.Expr]] | None:
        """A constant plural message (`ngettext`, `npgettext`): the filter of the rule that
        chooses its form, its translated forms, its count and its variables; None for anything
        else, or a catalog whose forms do not match its Plural-Forms (left to gettext)."""
        if not (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name)):
            return None
        name = node.node.name
        arity = {"ngettext": 3, "npgettext": 4}.get(name)
        if arity is None or node.dyn_args or node.dyn_kwargs or len(node.args) != arity:
            return None
        texts = [a.value for a in node.args[:-1]
                 if isinstance(a, nodes.Const) and isinstance(a.value, str)]
        catalogs = self._lookup()
        if len(texts) != arity - 1 or catalogs is None:
            return None
        context = texts[0] if arity == 4 else None
        singular, plural = texts[-2:]
        key = singular if context is None else f"{context}\x04{singular}"
        rule, forms = _NO_CATALOG, [singular, plural]
        for place, (messages, plurals, declared) in enumerate(catalogs):
            if key in plurals:  # gettext stops at the first catalog with the message
                rule = _RULE.format(place)
                forms = []
                while (key, len(forms)) in messages:
                    forms.append(messages[(key, len(forms))])
                if len(forms) != declared or any(
                        k[0] == key and k[1] not in range(declared)
                        for k in messages if isinstance(k, tuple)):
                    return None
                break
        count = self.visit(node.args[-1])
        variables: dict[str, nodes.Expr] = {v.key: self.visit(v.value) for v in node.kwargs}
        variables.setdefault("num", count)
        if context is not None:
            variables.setdefault("context", nodes.Const(context))
        return rule, forms, count, variables

    def _inline(self, text: str, variables: dict[str, nodes.Expr],
                lineno: int) -> list[nodes.Expr] | None:
        """`text` as template data and outputs; None when it holds a placeholder other than
        `%(name)s` and `%%`, or a name without a value (left to `%`, which says what is wrong)."""
        parts: list[nodes.Expr] = []
        start = 0
        for match in _PLACEHOLDER.finditer(text):
            data = text[start:match.start()]
            start = match.end()
            if match.group(0) == "%%":
                data += "%"
            elif match.group(1) in variables:
                if data:
                    parts.append(nodes.TemplateData(data, lineno=lineno))
                parts.append(variables[match.group(1)])
                continue
            else:
                return None
            if data:
                parts.append(nodes.TemplateData(data, lineno=lineno))
        if text[start:]:
            parts.append(nodes.TemplateData(text[start:], lineno=lineno))
        return parts

    @staticmethod
    def _chosen(rule: str, count: nodes.Expr, form: int, lineno: int) -> nodes.Expr:
        return nodes.Compare(nodes.Filter(count, rule, [], [], None, None, lineno=lineno),
                             [nodes.Operand("eq", nodes.Const(form))], lineno=lineno)

    def _inline_plural(self, node: nodes.Node) -> list[nodes.Node] | None:
        """A plural message as `{% with chosen = count|rule %}{% if chosen == 0 %}…{% elif … %}
        {% else %}…{% endif %}{% endwith %}`, each form inlined; None when it cannot be."""
        found = self._plural(node)
        if found is None:
            return None
        rule, forms, count, variables = found
        lineno = node.lineno
        outputs: list[list[nodes.Node]] = []
        for form in forms:
            parts = self._inline(form, variables, lineno)
            if parts is None:
                return None
            outputs.append([nodes.Output(parts, lineno=lineno)] if parts else [])
        if len(outputs) == 1:
            return outputs[0]
        chosen = nodes.Name(_CHOSEN, "load", lineno=lineno)
        tests = [nodes.Compare(chosen, [nodes.Operand("eq", nodes.Const(form))], lineno=lineno)
                 for form in range(len(outputs) - 1)]
        others = [nodes.If(test, body, [], [], lineno=lineno)
                  for test, body in zip(tests[1:], outputs[1:-1], strict=True)]
        choice = nodes.If(tests[0], outputs[0], others, outputs[-1], lineno=lineno)
        return [nodes.With([nodes.Name(_CHOSEN, "store", lineno=lineno)],
                           [nodes.Filter(count, rule, [], [], None, None, lineno=lineno)],
                           [choice], lineno=lineno)]

    def visit_Output(self, node: nodes.Output) -> nodes.Node | list[nodes.Node]:  # noqa: N802
        statements: list[nodes.Node] = []
        children: list[nodes.Expr] = []
        for child in node.nodes:
            found = self._translation(child)
            parts = None if found is None else self._inline(*found, lineno=child.lineno)
            if parts is not None:
                children.extend(parts)
                continue
            plural = self._inline_plural(child)
            if plural is None:
                children.append(self.visit(child))
                continue
            if children:
                statements.append(nodes.Output(children, lineno=node.lineno))
                children = []
            statements.extend(plural)
        if not statements:
            node.nodes = children
            return node
        if children:
            statements.append(nodes.Output(children, lineno=node.lineno))
        return statements

    @staticmethod
    def _formatted(text: str, variables: dict[str, nodes.Expr], lineno: int) -> nodes.Expr:
        translated = nodes.MarkSafeIfAutoescape(nodes.Const(text), lineno=lineno)
        return nodes.Mod(translated, nodes.Dict(
            [nodes.Pair(nodes.Const(k), v) for k, v in variables.items()]), lineno=lineno)

    def visit_Call(self, node: nodes.Call) -> nodes.Node:  # noqa: N802 (NodeTransformer's name)
        found = self._translation(node)
        if found is not None:
            return self._formatted(*found, lineno=node.lineno)
        plural = self._plural(node)
        if plural is None:
            return self.generic_visit(node)
        rule, forms, count, variables = plural
        choice = self._formatted(forms[-1], variables, node.lineno)
        for form in reversed(range(len(forms) - 1)):
            choice = nodes.CondExpr(self._chosen(rule, count, form, node.lineno),
                                    self._formatted(forms[form], variables, node.lineno),
                                    choice, lineno=node.lineno)
        return choice
