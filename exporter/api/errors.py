"""Errors from the 360dialog Partner API client.

    ApiError                 any failed call; `.endpoint`, `.kind` (a bounded label for metrics)
    ├── TransportError       no HTTP answer: connect, read timeout, reset         (retryable)
    ├── RateLimitError       429; `.retry_after` seconds when the API said so     (retryable)
    ├── ServerError          5xx                                                  (retryable)
    ├── AuthError            401/403; the token is dropped so the next call renews (retryable)
    ├── ClientError          other 4xx: our request is wrong                      (not retryable)
    └── ResponseError        2xx with a body we cannot read                       (retryable)

`.requests` is how many HTTP requests the failed call made (two when a usage fetch tried the
other granularity spelling), so the caller can charge every one of them.
"""

from __future__ import annotations


class ApiError(Exception):
    kind = "error"
    retryable = True

    def __init__(self, endpoint: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint
        self.status = status
        self.requests = 1


class TransportError(ApiError):
    kind = "transport"


class RateLimitError(ApiError):
    kind = "rate_limited"

    def __init__(self, endpoint: str, message: str, retry_after: float | None) -> None:
        super().__init__(endpoint, message, 429)
        self.retry_after = retry_after


class ServerError(ApiError):
    kind = "server"


class AuthError(ApiError):
    kind = "auth"


class ClientError(ApiError):
    kind = "client"
    retryable = False


class ResponseError(ApiError):
    kind = "malformed"
