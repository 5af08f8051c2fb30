#!/usr/bin/env bash
# Nothing to build: the SDK is installed into the repo's .venv by `make venv`.
exit 0
