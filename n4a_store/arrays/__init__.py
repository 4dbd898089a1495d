"""Prediction arrays in Zstd Parquet, one directory per dataset."""
