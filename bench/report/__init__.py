"""Reports: result CSVs from any number of runs and machines -> markdown (or HTML) with plots (build.py)."""

from bench.report.build import FORMATS, plots_dir_name, write_report

__all__ = ["FORMATS", "plots_dir_name", "write_report"]
