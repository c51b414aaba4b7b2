"""The one error type a user can cause and fix.

    raise UserError("--lamb must be >= 0, got -1.0")

A bad flag, a bad config file, missing data, a damaged checkpoint, a device that is not there: the CLI
prints the message as one line and exits with status 2, with no traceback. Anything else is a bug and
keeps its traceback.
"""


class UserError(ValueError):
    """A mistake the user can fix; the message names the fix."""


def shown(value) -> str:
    """A value as an error message quotes it: as it is, but a huge integer by its size (Python will not even
    print one of over 4,300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    return str(value)


def check_range(flag: str, ok: bool, rule: str, value) -> None:
    """UserError "--flag must be <rule>, got <value>" unless ``ok``."""
    if not ok:
        raise UserError(f"--{flag} must be {rule}, got {shown(value)}")


def check_choice(what: str, value, choices) -> None:
    """UserError "unknown <what> <value>; choose one of: ..." unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")
