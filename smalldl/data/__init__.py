"""Data: dataset adapters, preprocessing cache, tasks and splits."""
