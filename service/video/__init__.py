"""Video and live streams: decoding (PyAV), tracking, One-Euro smoothing, and the per-video session that runs
frames through the same detector, crop micro-batcher and codec as images."""
