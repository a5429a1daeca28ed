"""Hospitals (the tenants), their AE titles, and the people who log in to the console."""
