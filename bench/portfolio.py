"""Write a realistic synthetic receivables snapshot (customers.csv, invoices.csv), and with
--days a sequence of daily snapshots in which invoices get paid, partly paid, disputed and
created, following each customer's payment behaviour. Deterministic for a seed.

    python bench/portfolio.py --customers 100000 --invoices 1000000 --seed 1 --out bench/out/1m
    python bench/portfolio.py --customers 1000 --invoices 10000 --days 5 --out bench/out/10k
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

START = date(2026, 11, 2)
LANGUAGES = (("fr", "FR", 0.45), ("nl", "BE", 0.15), ("fr", "BE", 0.1), ("de", "DE", 0.12),
             ("en", "GB", 0.13), ("en", "IE", 0.05))
# Daily chance of paying once due, from very good to very bad payers, and their shares.
BEHAVIOURS = (("very_good", 0.30, 0.20), ("good", 0.12, 0.35), ("average", 0.05, 0.25),
              ("bad", 0.015, 0.15), ("very_bad", 0.003, 0.05))
TERMS = (30, 30, 45, 60)


@dataclass(slots=True)
class Invoice:
    invoice_id: str
    customer: int
    number: str
    issue_date: date
    due_date: date
    amount: int  # cents
    amount_open: int


def _pick(rng: random.Random, table: tuple[tuple, ...]) -> tuple:  # type: ignore[type-arg]
    roll, acc = rng.random(), 0.0
    for row in table:
        acc += row[-1]
        if roll < acc:
            return row
    return table[-1]


def build(customers: int, invoices: int, seed: int, start: date) -> tuple[list[list[str]],
                                                                         list[float],
                                                                         list[Invoice]]:
    rng = random.Random(seed)
    rows, pay_rates = [], []
    for n in range(customers):
        language, country, _ = _pick(rng, LANGUAGES)
        _, rate, _ = _pick(rng, BEHAVIOURS)
        cid = f"C{n:07d}"
        email = "" if rng.random() < 0.02 else f"ap@{cid.lower()}.example"
        rows.append([cid, f"Client {n} {rng.choice(('SAS', 'SARL', 'BV', 'GmbH', 'Ltd'))}",
                     email, f"+33 1 {rng.randint(10, 99)} {rng.randint(10, 99)} "
                     f"{rng.randint(10, 99)} {rng.randint(10, 99)}", language, country,
                     f"{rng.randint(5, 200) * 1000}.00", rng.choice(("small", "mid", "key"))])
        pay_rates.append(rate)
    book = []
    for n in range(invoices):
        customer = rng.randrange(customers)
        issued = start - timedelta(days=rng.randint(0, 200))
        due = issued + timedelta(days=rng.choice(TERMS))
        amount = int(math.exp(rng.gauss(7.0, 1.1)) * 100) + 5000
        credit = rng.random() < 0.01
        if credit:
            amount = -amount
        overdue = (start - due).days
        # Older invoices of good payers are mostly settled already: keep what is plausible.
        open_amount = amount if rng.random() > 0.1 else amount // 2
        book.append(Invoice(f"I{n:08d}", customer, f"F{n:08d}", issued, due, amount,
                            open_amount if overdue < 400 else amount))
    return rows, pay_rates, book


def step(rng: random.Random, book: list[Invoice], pay_rates: list[float], day: date,
         customers: int, next_id: int, new_per_day: int) -> tuple[int, list[str]]:
    """One business day: payments by behaviour, a few disputes, new invoices."""
    disputes = []
    for invoice in book:
        if invoice.amount_open <= 0 or invoice.amount < 0:
            continue
        if day >= invoice.due_date - timedelta(days=3) and rng.random() < pay_rates[
                invoice.customer]:
            invoice.amount_open = 0 if rng.random() < 0.85 else invoice.amount_open // 2
        elif day > invoice.due_date and rng.random() < 0.0005:
            disputes.append(invoice.invoice_id)
    for _ in range(new_per_day):
        due = day + timedelta(days=rng.choice(TERMS))
        amount = int(math.exp(rng.gauss(7.0, 1.1)) * 100) + 5000
        book.append(Invoice(f"I{next_id:08d}", rng.randrange(customers), f"F{next_id:08d}",
                            day, due, amount, amount))
        next_id += 1
    return next_id, disputes


def write(folder: Path, customers: list[list[str]], book: list[Invoice],
          disputes: list[str] | None = None) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "customers.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "name", "email", "phone", "language", "country",
                         "credit_limit", "segment"])
        writer.writerows(customers)
    written = 0
    with (folder / "invoices.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["invoice_id", "customer_id", "number", "issue_date", "due_date",
                         "currency", "amount", "amount_open"])
        for i in book:
            if i.amount_open == 0:
                continue  # settled lines leave the open-items export
            writer.writerow([i.invoice_id, customers[i.customer][0], i.number,
                             i.issue_date.isoformat(), i.due_date.isoformat(), "",
                             f"{i.amount / 100:.2f}", f"{i.amount_open / 100:.2f}"])
            written += 1
    if disputes is not None:
        (folder / "disputes.csv").write_text(
            "invoice_id\n" + "".join(f"{d}\n" for d in disputes), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, required=True)
    parser.add_argument("--invoices", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--days", type=int, default=0,
                        help="also write this many following business days, one folder each")
    parser.add_argument("--start", type=date.fromisoformat, default=START)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    customers, rates, book = build(args.customers, args.invoices, args.seed, args.start)
    count = write(args.out / args.start.isoformat(), customers, book)
    print(f"{args.start}: {count} open invoices, {len(customers)} customers", file=sys.stderr)
    rng = random.Random(args.seed + 1)
    day, next_id = args.start, len(book)
    for _ in range(args.days):
        day += timedelta(days=1)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        next_id, disputes = step(rng, book, rates, day, args.customers, next_id,
                                 max(1, args.invoices // 200))
        count = write(args.out / day.isoformat(), customers, book, disputes)
        print(f"{day}: {count} open invoices, {len(disputes)} disputes", file=sys.stderr)
    print(f"written in {time.perf_counter() - began:.1f} s to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
