"""Regional sharing: one person across hospitals, consent, the similar-exam warning and the
imaging index (see docs/regional.md)."""
