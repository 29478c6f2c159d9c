# -*- coding: utf-8 -*-
"""Make ``harness`` and ``ansible_collections.mlflowops.maintenance`` importable for every test."""

import os
import sys

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from harness.runner import collections_path  # noqa: E402  pylint: disable=wrong-import-position

_COLLECTIONS = collections_path()
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)
