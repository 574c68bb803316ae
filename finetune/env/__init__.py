"""Environment: platform-specific install recipes and the doctor's checks (light: no torch)."""
