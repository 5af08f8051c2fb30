"""Jetbridge's dispatcher: pulls tasks from JetStream work queues and runs them on handler services."""

__version__ = "0.1.0"
