"""What a failed discovery says about the configuration, in words that name the setting to
check: the poller logs it (once per change) and `/readyz` answers it until a discovery succeeds.

Pure. Only the status and the settings' names and public values go into the words, never an
answer's body or a credential.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from exporter.api.errors import ApiError, AuthError, ClientError
from exporter.config import ENV_PREFIX, REAL_API_URL

API_PATH = "/api/v2"  # where the Partner API's paths start (REAL_API_URL)
API_KEY = f"{ENV_PREFIX}API_KEY"
USERNAME_AND_PASSWORD = f"{ENV_PREFIX}USERNAME and {ENV_PREFIX}PASSWORD"
API_URL = f"{ENV_PREFIX}API_URL"
PARTNER_ID = f"{ENV_PREFIX}PARTNER_ID"


@dataclass(frozen=True, slots=True)
class Problem:
    """Why discovery failed: the setting that is probably wrong (None when it is likely not a
    setting at all) and a sentence saying so."""

    setting: str | None
    message: str
    status: int | None


def discovery_problem(exc: ApiError, *, partner_id: str, api_url: str,
                      api_key: bool) -> Problem:
    """Read a discovery failure. `api_key`: the exporter authenticates with an API key (else
    with a username and password, exchanged for a token)."""
    status = exc.status
    answered = f"the API answered {status} for partner {partner_id}"
    refused_login = exc.endpoint == "token" and status is not None and 400 <= status < 500
    if (isinstance(exc, AuthError) and status in (401, 403)) or refused_login:
        # The token request refused is the username and password, whatever its 4xx.
        setting = API_KEY if api_key else USERNAME_AND_PASSWORD
        return Problem(setting, f"{answered}; check {setting}", status)
    if isinstance(exc, ClientError) and status == 404:
        url = urlsplit(api_url)
        shown = url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()  # no userinfo
        if not url.path.rstrip("/").endswith(API_PATH):
            return Problem(API_URL, f"{answered}: {API_URL} ({shown}) has no {API_PATH} path; "
                                    f"the Partner API is at {REAL_API_URL}", status)
        return Problem(PARTNER_ID, f"{answered} at {shown}; check {PARTNER_ID}", status)
    what = f"HTTP {status}" if status is not None else exc.kind
    return Problem(None, f"{exc.endpoint} failed ({what}); retrying", status)
