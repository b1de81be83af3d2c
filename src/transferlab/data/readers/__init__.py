"""One module per recipe `source:`, each reading its format into an `ImageTextData` (or text pairs); the
door is readers/sources.py: `load_dataset` and `load_splits`."""
