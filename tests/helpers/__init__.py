"""Code several test modules share: test modules import from here, never from one another."""
