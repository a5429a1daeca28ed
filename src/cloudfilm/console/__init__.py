"""The hospital console: staff log in (``/``), then worklist, film desk, statistics, audit and
administration pages (users, AE titles, API tokens, hospitals), each for the roles it serves."""
