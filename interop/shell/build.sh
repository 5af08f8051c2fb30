#!/usr/bin/env bash
# Nothing to build: `jetbridge handle` is part of the jetbridge CLI, installed into the repo's .venv by `make venv`.
exit 0
