"""Keeping images for decades: fixity, a second copy, index rebuild, retention and tiering,
encryption at rest, de-identified research export (see docs/keeping.md)."""
