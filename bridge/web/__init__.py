"""Jetbridge's HTTP API and dashboard (``jetbridge serve``).

The ``/v1`` paths, bodies and error envelope follow asyncjobs' REST API (``ajc server run``) so its clients work
unchanged; Jetbridge's additions (dead letters, pause, handlers, history, live events) live beside them. Lists and
counts come from the shared task index (bridge/index.py), never from a scan of the store.
"""
