"""Test-time pipelines beside the official one: mmpose 1.x's MSRAHeatmap, DARK and UDP (see spec.py)."""
