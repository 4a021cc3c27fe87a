"""Datasets: readers of ReasonSeg and robot data, synthetic sets, and the reasoning-scene generator."""
