"""Shared pytest setup: fixture notebooks are test *inputs*, never collected as tests themselves."""

import os

collect_ignore = ["fixtures"]

# Tests never reach a hub: the same offline switches CI sets, so a local run behaves the same way.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
