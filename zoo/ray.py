"""``zoo.ray``: the Ray Data stage and engine of ``zoo.tools.ray``, under the name the docs use.

An entry point like ``zoo.cli``: it sits in the top import layer (pyproject.toml's layers contract), so
the zoo core still imports no tool, and ``import zoo`` does not import Ray. Needs the ``ray`` extra.
"""

from zoo.tools.ray import ROW_COLUMNS, Tokenize, actor_pool_size, error_schema, row_schema, run

__all__ = ["ROW_COLUMNS", "Tokenize", "actor_pool_size", "error_schema", "row_schema", "run"]
