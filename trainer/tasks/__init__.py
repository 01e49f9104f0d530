"""The built-in tasks (what is learned), plain code against the engine's task contract (trainer/engine/task.py)."""
