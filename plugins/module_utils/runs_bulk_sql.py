# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SQL side of ``runs_cleanup method=database``: the engine, the reflected MLflow tables, and the
translation of the parsed ``filter`` into SQLAlchemy conditions with MLflow's own comparison semantics.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mlflowops.maintenance.plugins.module_utils.common import MaintenanceError
from ansible_collections.mlflowops.maintenance.plugins.module_utils.sql_engine import sqlalchemy

TABLES = ("runs", "experiments", "tags", "params", "latest_metrics", "model_versions", "assessments")


def first_line(exc):
    """The first line of a (database) error, for a one-line message."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class RunTables:
    """The MLflow tables the bulk path reads and writes, reflected from the live store."""

    def __init__(self, engine):
        self.engine = engine
        self.dialect = engine.dialect.name
        metadata = sqlalchemy.MetaData()
        try:
            present = set(sqlalchemy.inspect(engine).get_table_names())
            metadata.reflect(engine, only=[name for name in TABLES if name in present])
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise MaintenanceError("cannot read the backend store: %s; nothing was changed" % first_line(exc))
        tables = metadata.tables
        for required in ("runs", "experiments", "tags"):
            if required not in tables:
                raise MaintenanceError("the backend store has no %s table: is it an MLflow database? nothing was changed"
                                       % required)
        self.runs = tables["runs"]
        self.experiments = tables["experiments"]
        self.tags = tables["tags"]
        self.params = tables.get("params")
        self.latest_metrics = tables.get("latest_metrics")
        self.model_versions = tables.get("model_versions")
        self.assessments = tables.get("assessments")

    # -- string comparison as MLflow's SearchUtils.get_sql_comparison_func does it ---------------------------
    def compare(self, column, comparator, value):
        if comparator == "LIKE":
            clause = column.like(value)
        elif comparator == "ILIKE":
            return column.ilike(value)
        elif comparator == "=":
            clause = column == value
        elif comparator == "!=":
            clause = column != value
        elif comparator == "<":
            return column < value
        elif comparator == "<=":
            return column <= value
        elif comparator == ">":
            return column > value
        elif comparator == ">=":
            return column >= value
        else:  # pragma: no cover - parse_filter refuses anything else
            raise MaintenanceError("comparator %s is not translated" % comparator)
        if self.dialect == "mysql" and isinstance(column.type, sqlalchemy.String):
            # MySQL compares strings case-insensitively: MLflow adds a BINARY comparison, so do we.
            binary = sqlalchemy.func.binary(column)
            exact = {"LIKE": binary.like(value), "=": binary == value, "!=": binary != value}[comparator]
            return sqlalchemy.or_(clause, exact) if comparator == "!=" else sqlalchemy.and_(clause, exact)
        return clause

    def filter_clauses(self, parsed):
        """SQLAlchemy conditions on ``runs`` for the parsed filter clauses (same semantics as MLflow's SQL store)."""
        runs = self.runs
        conditions = []
        for clause in parsed:
            if clause.kind == "attribute" and clause.key == "run_name":
                conditions.append(self._exists(self.tags, "mlflow.runName", clause.comparator, clause.value))
            elif clause.kind == "attribute":
                conditions.append(self.compare(runs.c[clause.key], clause.comparator, clause.value))
            elif clause.kind == "tag":
                conditions.append(self._exists(self.tags, clause.key, clause.comparator, clause.value))
            elif clause.kind == "param":
                if self.params is None:
                    raise MaintenanceError("the backend store has no params table; nothing was changed")
                conditions.append(self._exists(self.params, clause.key, clause.comparator, clause.value))
            elif clause.kind == "metric":
                if self.latest_metrics is None:
                    raise MaintenanceError("the backend store has no latest_metrics table; nothing was changed")
                table = self.latest_metrics
                value_filter = self.compare(table.c.value, clause.comparator, clause.value)
                if "is_nan" in table.c:
                    # NaN is stored as 0 with is_nan: only "!=" matches it, as in MLflow's store.
                    if clause.comparator == "!=":
                        value_filter = sqlalchemy.or_(value_filter, table.c.is_nan == sqlalchemy.true())
                    else:
                        value_filter = sqlalchemy.and_(value_filter, table.c.is_nan == sqlalchemy.false())
                conditions.append(sqlalchemy.exists().where(table.c.run_uuid == runs.c.run_uuid,
                                                            self.compare(table.c.key, "=", clause.key), value_filter))
        return conditions

    def _exists(self, table, key, comparator, value):
        return sqlalchemy.exists().where(table.c.run_uuid == self.runs.c.run_uuid, self.compare(table.c.key, "=", key),
                                         self.compare(table.c.value, comparator, value))
