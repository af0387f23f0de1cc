"""SES's own reputation rates, read from CloudWatch with the account's credentials.

SES publishes `Reputation.BounceRate` and `Reputation.ComplaintRate` in `AWS/SES` without
dimensions (account level, per region); the latest datapoint is the account's current rate.
The account's `endpoint_url` (set only for local stacks and tests such as moto, which serve
every AWS API on one address) is used for CloudWatch too.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig

from services.bounce.brake import Rates
from shared.contracts import SesConnection
from shared.crypto import SecretBox

_METRICS = {"bounce": "Reputation.BounceRate", "complaint": "Reputation.ComplaintRate"}
# SES updates the rates every few minutes at most; a 5-minute period loses nothing.
_PERIOD_SECONDS = 300
# One poll reads once; a slow CloudWatch waits for the next poll rather than hold this one.
_CONFIG = AioConfig(retries={"total_max_attempts": 2}, connect_timeout=10, read_timeout=20)


def _query(query_id: str, metric: str) -> dict[str, Any]:
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {"Namespace": "AWS/SES", "MetricName": metric},
            "Period": _PERIOD_SECONDS,
            "Stat": "Maximum",
        },
    }


def _latest(result: dict[str, Any]) -> float | None:
    points = sorted(zip(result["Timestamps"], result["Values"], strict=True), reverse=True)
    return float(points[0][1]) if points else None


class CloudWatchRates:
    """Reads an SES account's reputation rates; raises on AWS or credential errors."""

    def __init__(self, secrets: SecretBox, lookback: timedelta) -> None:
        self._secrets = secrets
        self._lookback = lookback

    async def read(self, ses: SesConnection, now: datetime) -> Rates:
        """The latest bounce and complaint rates within the lookback (None: no datapoint)."""
        session = aioboto3.Session(
            aws_access_key_id=ses.access_key_id,
            aws_secret_access_key=self._secrets.decrypt(ses.secret_access_key_encrypted),
            region_name=ses.region,
        )
        async with session.client("cloudwatch", endpoint_url=ses.endpoint_url, config=_CONFIG) as client:
            answer = await client.get_metric_data(
                MetricDataQueries=[_query(query_id, metric) for query_id, metric in _METRICS.items()],
                StartTime=now - self._lookback,
                EndTime=now,
            )
        results = {result["Id"]: _latest(result) for result in answer["MetricDataResults"]}
        return Rates("cloudwatch", results.get("bounce"), results.get("complaint"))
