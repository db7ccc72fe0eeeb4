"""Settings for the corpus tests: models load offline (the shared MiniLM fixtures live in tests/conftest.py)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


