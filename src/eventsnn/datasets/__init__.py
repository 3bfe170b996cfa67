"""Procedural datasets (seeded, no download): Yin-Yang and simple 2-D tasks."""
