"""The cloud-film fixtures (real app, SMS through the webhook back-end to a test gateway)."""

from tests.portal.conftest import portal, settings, sms  # noqa: F401
