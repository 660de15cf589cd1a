"""Evaluation phase: bulk predictions, ensembling and operating points, metrics, tables and reports."""
