"""Prefect flows: the daily run and the demo."""
