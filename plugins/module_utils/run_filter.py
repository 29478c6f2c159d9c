# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The subset of MLflow's run search filter that ``runs_cleanup method=database`` translates: pure parsing, no I/O.

A filter is clauses joined by AND. Each clause is ``<type>.<key> <comparator> <value>``:

- ``tags``/``params`` (and their aliases): ``=``, ``!=``, ``LIKE``, ``ILIKE`` with a quoted string;
- ``metrics``: ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` with a number;
- ``attributes``: ``start_time``/``end_time``/``created`` compared with an integer, ``status``, ``run_name``,
  ``run_id``, ``user_id``, ``artifact_uri`` with ``=``, ``!=``, ``LIKE``, ``ILIKE`` and a quoted string.

Anything else (``IN``, ``IS NULL``, datasets, escaped quotes inside values, OR) is refused with a message
that names the clause: ``method: rest`` lets the server evaluate it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError

TYPE_ALIASES = {
    "tags": "tag", "tag": "tag",
    "params": "param", "param": "param", "parameter": "param", "parameters": "param",
    "metrics": "metric", "metric": "metric",
    "attributes": "attribute", "attribute": "attribute", "attr": "attribute", "run": "attribute",
}
STRING_COMPARATORS = ("=", "!=", "LIKE", "ILIKE")
NUMERIC_COMPARATORS = ("=", "!=", "<", "<=", ">", ">=")
NUMERIC_ATTRIBUTES = {"start_time": "start_time", "end_time": "end_time", "created": "start_time", "Created": "start_time"}
STRING_ATTRIBUTES = {"status": "status", "run_id": "run_uuid", "user_id": "user_id", "artifact_uri": "artifact_uri",
                     "run_name": "run_name", "run name": "run_name", "Run name": "run_name", "Run Name": "run_name"}

_CLAUSE = re.compile(
    r"""\s*(?P<type>[A-Za-z_]+)\.(?P<key>`[^`]+`|"[^"\\]+"|[\w.\-/:]+)\s*"""
    r"""(?P<op>!=|<>|<=|>=|=|<|>|NOT\s+ILIKE|NOT\s+LIKE|ILIKE|LIKE|IS\s+NOT\s+NULL|IS\s+NULL|NOT\s+IN|IN|RLIKE)\s*"""
    r"""(?P<value>'[^'\\]*'|"[^"\\]*"|-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\([^)]*\))?\s*(?:$|AND\s+(?=\S))""",
    re.IGNORECASE)


class Clause:
    """One translated comparison: ``kind`` (tag, param, metric, attribute), ``key``, ``comparator``, ``value``."""

    def __init__(self, kind, key, comparator, value, text):
        self.kind = kind
        self.key = key
        self.comparator = comparator
        self.value = value
        self.text = text

    def __repr__(self):
        return "Clause(%r, %r, %r, %r)" % (self.kind, self.key, self.comparator, self.value)


def _refuse(text, why):
    return MaintenanceError("filter clause %r cannot be evaluated by method=database (%s); use method=rest, which lets "
                            "the tracking server evaluate it; nothing was changed" % (text.strip(), why))


def _unquote(text):
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "`\"'":
        return text[1:-1]
    return text


def _number(text, clause, integer=False):
    if text is None or text[0] in "'\"(":
        raise _refuse(clause, "a number is expected")
    try:
        return int(text) if integer else float(text)
    except ValueError:
        raise _refuse(clause, "an integer is expected")


def _string(text, clause):
    if text is None or text[0] not in "'\"":
        raise _refuse(clause, "a quoted string is expected")
    return _unquote(text)


def parse_filter(text):
    """The clauses of ``text`` (empty list for an empty filter); MaintenanceError for what cannot be translated."""
    text = (text or "").strip()
    clauses = []
    position = 0
    while position < len(text):
        match = _CLAUSE.match(text, position)
        if not match or match.end() == position:
            raise _refuse(text[position:], "only <type>.<key> <comparator> <value> clauses joined by AND are translated")
        position = match.end()
        clause_text = match.group(0).strip()
        if clause_text.upper().endswith(" AND"):
            clause_text = clause_text[:-4].strip()
        kind = TYPE_ALIASES.get(match.group("type").lower())
        key = _unquote(match.group("key"))
        comparator = re.sub(r"\s+", " ", match.group("op").upper())
        raw = match.group("value")
        if kind is None:
            raise _refuse(clause_text, "entity type %r is not translated" % match.group("type"))
        if kind == "metric":
            if comparator not in NUMERIC_COMPARATORS:
                raise _refuse(clause_text, "metrics take %s" % ", ".join(NUMERIC_COMPARATORS))
            clauses.append(Clause(kind, key, comparator, _number(raw, clause_text), clause_text))
        elif kind in ("tag", "param"):
            if comparator not in STRING_COMPARATORS:
                raise _refuse(clause_text, "%ss take %s" % (kind, ", ".join(STRING_COMPARATORS)))
            clauses.append(Clause(kind, key, comparator, _string(raw, clause_text), clause_text))
        elif key in NUMERIC_ATTRIBUTES:
            if comparator not in NUMERIC_COMPARATORS:
                raise _refuse(clause_text, "%s takes %s" % (key, ", ".join(NUMERIC_COMPARATORS)))
            clauses.append(Clause(kind, NUMERIC_ATTRIBUTES[key], comparator, _number(raw, clause_text, True), clause_text))
        elif key in STRING_ATTRIBUTES:
            if comparator not in STRING_COMPARATORS:
                raise _refuse(clause_text, "%s takes %s" % (key, ", ".join(STRING_COMPARATORS)))
            clauses.append(Clause(kind, STRING_ATTRIBUTES[key], comparator, _string(raw, clause_text), clause_text))
        else:
            raise _refuse(clause_text, "attribute %r is not translated" % key)
    return clauses
