#!/usr/bin/env bash
# Placeholder until the sandbox lands: nothing to build yet.
exit 0
