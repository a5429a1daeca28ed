"""The patient's cloud film: reports, films, verification, sessions, shares, pages."""
