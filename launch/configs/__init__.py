"""Experiment configs: one file per (dataset, stage)."""
