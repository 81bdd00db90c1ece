"""The local Obol-like stack the demo and the tests run against (not part of the shipped skill)."""
