"""The only outbound HTTP of the SNS endpoint: fetching signing certificates and confirming
subscriptions, both to URLs `sns` has already checked."""

from __future__ import annotations

import httpx

# A certificate is ~2 KiB and a confirmation answer smaller: anything bigger is not SNS.
_MAX_RESPONSE_BYTES = 64 * 1024


class SnsHttpClient:
    """Fetches from SNS hosts without following redirects (a redirect could leave the checked
    host) and reads at most a small answer."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def _get(self, url: str) -> bytes:
        async with self._client.stream("GET", url, follow_redirects=False) as response:
            response.raise_for_status()
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_RESPONSE_BYTES:
                    raise ValueError("SNS answer too large")
            return body

    async def fetch_certificate(self, url: str) -> bytes:
        """The PEM at a checked certificate URL."""
        return await self._get(url)

    async def confirm_subscription(self, url: str) -> None:
        """Visit a checked SubscribeURL, which confirms the subscription."""
        await self._get(url)
