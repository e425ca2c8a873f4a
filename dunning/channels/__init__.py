"""Channels deliver actions from the outbox table. Only email is delivered by this version; the
other channels' actions stay queued and are reported as such."""
