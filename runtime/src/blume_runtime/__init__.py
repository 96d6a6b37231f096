"""The shared runtime every Blume Share worker runs on (written once, never copied)."""
