"""ISO 7064 MOD 11-2: the check character of China's national ID number (GB 11643) and of our
imaging index IDs. One implementation, so both are checked the same way."""

from __future__ import annotations


def mod11_2(digits: str) -> str:
    """The check character (``0``-``9`` or ``X``) for a string of decimal digits."""
    if not digits.isdigit() or not digits.isascii():
        raise ValueError("MOD 11-2 is defined over decimal digits")
    p = 0
    for ch in digits:
        p = ((p + int(ch)) * 2) % 11
    check = (12 - p) % 11
    return "X" if check == 10 else str(check)


def valid_mod11_2(value: str) -> bool:
    """True when the last character is the check character of the digits before it."""
    if len(value) < 2 or not value[:-1].isdigit() or not value[:-1].isascii():
        return False
    return mod11_2(value[:-1]) == value[-1].upper()
