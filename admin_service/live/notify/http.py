"""One POST to a receiver for the webhook and Slack senders: a 2xx is accepted, anything else
(connection refused, a timeout, another status) is a DeliveryError saying which."""

from __future__ import annotations

import requests

from admin_service.live.notify.senders import DeliveryError

USER_AGENT = "admin-service-notify/1"


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> None:
    try:
        # No redirects: a signed message goes where it was configured to go, or nowhere.
        response = requests.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            timeout=timeout_s,
            allow_redirects=False,
        )
    except requests.Timeout:
        raise DeliveryError(f"timed out after {timeout_s:g} s") from None
    except requests.ConnectionError as exc:
        reason = str(exc.args[0]) if exc.args else type(exc).__name__
        raise DeliveryError(f"connection failed: {reason[:300]}") from None
    except requests.RequestException as exc:
        raise DeliveryError(f"{type(exc).__name__}: {str(exc)[:300]}") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}")
