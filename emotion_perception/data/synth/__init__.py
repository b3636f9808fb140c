"""Procedural context-emotion scenes with a known generative answer, written in the real formats.

See docs/DATA.md for the rules (which cue gives which category) and the formats.
"""
