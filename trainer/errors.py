"""The one exception type for problems the user can fix (config, data, checkpoint files)."""


class UserError(Exception):
    """Printed as a single line naming what is wrong and how to fix it; `train` exits with 2."""
