"""Reporting: from timed runs to rows and comparisons, Markdown and JSON, plots, and the
demo's table. `bench`, `demo` and the scripts in `benchmarks/` use it."""

from .environment import environment
from .markdown import markdown, render_demo_table, write_report, write_tables
from .plots import PLOT_FILES
from .summary import SCHEMA_VERSION, Config, Run, compare, demo_table, predicted_speedup, summarise, timings_report

__all__ = ["PLOT_FILES", "SCHEMA_VERSION", "Config", "Run", "compare", "demo_table", "environment", "markdown", "predicted_speedup",
           "render_demo_table", "summarise", "timings_report", "write_report", "write_tables"]
