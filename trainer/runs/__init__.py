"""Run folders over time: their layout, resuming, config drift, requeueing, and sweeps of many runs.
"""
