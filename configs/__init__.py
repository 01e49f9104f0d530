"""Hydra configs, shipped as package data so an installed `train` finds them from any folder."""
