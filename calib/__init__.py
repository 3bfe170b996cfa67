"""Calibration command line: ``python -m calib --help``."""
