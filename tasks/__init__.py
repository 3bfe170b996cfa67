"""Task runners: `python -m tasks.<name>` (thin: parse arguments, call the library)."""
