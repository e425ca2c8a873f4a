"""dunning: chase unpaid B2B invoices up an escalation ladder."""

__version__ = "0.1.0"
