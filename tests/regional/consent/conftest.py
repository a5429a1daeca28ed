"""The cloud-film fixtures (real app, SMS through the webhook back-end to a test gateway), and
a world of two hospitals with one person's exams at both."""

import pytest

from tests.portal.conftest import Portal, portal, settings, sms  # noqa: F401
from tests.regional.consent.test_consent import World


@pytest.fixture
def world(portal: Portal) -> World:  # noqa: F811
    return World(portal)
