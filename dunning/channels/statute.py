"""What a reminder says of the law on late payment: the legal basis of the creditor's country
(dunning/law.py) and the fixed compensation for recovery costs it attaches to each invoice."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from types import SimpleNamespace

from babel import Locale

from dunning import law
from dunning.channels.formatting import money
from dunning.channels.message import Line
from dunning.channels.templating import translations
from dunning.policy import Policy


def N_(message: str) -> str:
    """Marks a message for `make messages`; it is translated where it is used."""
    return message


# Each rule's legal basis as a reminder cites it ("Under <basis>, ..."): the catalogs translate
# it as a phrase that follows "Under" in the reminder's sentence.
BASIS = {
    "FR": N_("article L441-10 of the French Commercial Code (Code de commerce)"),
    "BE": N_("the Belgian Act of 2 August 2002 on combating late payment in commercial "
             "transactions"),
    "DE": N_("section 288 of the German Civil Code (BGB)"),
    "GB": N_("the Late Payment of Commercial Debts (Interest) Act 1998"),
    "EU": N_("Directive 2011/7/EU on combating late payment in commercial transactions"),
}


class Penalties:
    """The legal consequences of late payment for one policy's creditor, as a reminder states
    them: None where dunning knows no rule for the creditor's country, or no single fixed
    compensation for the message's invoices (none is ever guessed)."""

    def __init__(self, policy: Policy, root: str) -> None:
        self.rule = law.statutory_rule(policy.law.country or policy.creditor.country)
        self.fixed = policy.law.compensation  # a contractual sum replaces the statutory one
        self.root = root

    def __call__(self, language: str, locale: Locale,
                 lines: Iterable[Line]) -> SimpleNamespace | None:
        rule = self.rule
        if rule is None:
            return None
        amounts = {self.fixed} if self.fixed is not None else \
            {rule.compensation(line.amount_open) for line in lines}
        if len(amounts) != 1:  # GB: 40, 70 or 100 pounds by the debt's size
            return None
        amount = amounts.pop()
        if amount <= Decimal(0):
            return None
        return SimpleNamespace(
            basis=translations(self.root, language).gettext(BASIS[rule.country]),
            compensation=money(amount, rule.currency, locale))
