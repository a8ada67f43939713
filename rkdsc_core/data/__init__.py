"""Datasets by name, decoded once into a checksum-keyed uint8 cache."""

__all__: list[str] = []
