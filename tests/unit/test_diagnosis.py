"""Reading a failed discovery: the setting it names, and when it is retried soon."""

from __future__ import annotations

import pytest

from exporter.api.errors import AuthError, ClientError, ServerError, TransportError
from exporter.polling.backoff import retries_soon
from exporter.polling.diagnosis import discovery_problem
from exporter.polling.tasks import TaskKind

URL = "https://hub.360dialog.io/api/v2"


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_name_the_setting_in_use(status):
    """401 and 403 name D360_API_KEY with a key, the username and password pair without."""
    exc = AuthError("clients", f"HTTP {status}: nope", status)
    key = discovery_problem(exc, partner_id="PA1", api_url=URL, api_key=True)
    assert key.setting == "D360_API_KEY"
    assert key.message == f"the API answered {status} for partner PA1; check D360_API_KEY"
    pair = discovery_problem(exc, partner_id="PA1", api_url=URL, api_key=False)
    assert pair.setting == "D360_USERNAME and D360_PASSWORD"


def test_a_refused_token_request_names_the_username_and_password():
    """The token endpoint refusing the login with any 4xx names the pair."""
    problem = discovery_problem(ClientError("token", "HTTP 400: bad", 400), partner_id="PA1",
                                api_url=URL, api_key=False)
    assert problem.setting == "D360_USERNAME and D360_PASSWORD"
    assert problem.message == ("the API answered 400 for partner PA1; "
                               "check D360_USERNAME and D360_PASSWORD")


@pytest.mark.parametrize("url", ["https://hub.360dialog.io", "https://hub.360dialog.io/",
                                 "https://proxy.example/360dialog/api"])
def test_a_404_below_a_url_without_the_api_path_names_the_url(url):
    """A base URL whose path does not end in /api/v2 is named, with where the API is."""
    problem = discovery_problem(ClientError("clients", "HTTP 404: x", 404), partner_id="PA1",
                                api_url=url, api_key=True)
    assert problem.setting == "D360_API_URL"
    assert f"D360_API_URL ({url}) has no /api/v2 path" in problem.message
    assert problem.message.endswith("the Partner API is at https://hub.360dialog.io/api/v2")


def test_a_404_below_the_api_path_names_the_partner_and_hides_url_credentials():
    """With /api/v2 in place a 404 points at the partner id; userinfo in the URL is not
    repeated."""
    problem = discovery_problem(ClientError("clients", "HTTP 404: x", 404), partner_id="PA9",
                                api_url="https://user:s3cret@proxy.example/api/v2",
                                api_key=True)
    assert problem.setting == "D360_PARTNER_ID"
    assert "s3cret" not in problem.message
    assert "https://proxy.example/api/v2" in problem.message


def test_other_failures_name_no_setting_and_no_body():
    """A 5xx or a transport error is not a setting: the words say what failed, not the body."""
    server = discovery_problem(ServerError("clients", "HTTP 502: <html>secret</html>", 502),
                               partner_id="PA1", api_url=URL, api_key=True)
    assert server.setting is None
    assert server.message == "clients failed (HTTP 502); retrying"
    transport = discovery_problem(TransportError("channels", "ConnectError"),
                                  partner_id="PA1", api_url=URL, api_key=True)
    assert transport.message == "channels failed (transport); retrying"


def test_discovery_is_retried_soon_until_it_first_succeeds():
    """Before the first discovery even an error that retrying will not fix goes on the
    backoff; after it, and for other tasks, only retryable ones do."""
    assert retries_soon(TaskKind.DISCOVERY, retryable=False, discovered_once=False)
    assert not retries_soon(TaskKind.DISCOVERY, retryable=False, discovered_once=True)
    assert not retries_soon(TaskKind.USAGE, retryable=False, discovered_once=False)
    assert retries_soon(TaskKind.USAGE, retryable=True, discovered_once=True)
