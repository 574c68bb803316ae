"""Models made on the spot (heavy: imports torch inside functions only)."""
