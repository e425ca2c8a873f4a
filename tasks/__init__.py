"""Prefect tasks: thin wrappers over `dunning.daily`, one per step, batch or channel."""
