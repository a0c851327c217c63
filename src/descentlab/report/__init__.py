"""Figures (matplotlib) and one self-contained HTML page per run directory."""
