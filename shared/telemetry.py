"""OpenTelemetry tracing: one provider per service, exported over OTLP/HTTP when configured.

Trace context crosses RabbitMQ in message headers (FastStream's telemetry middleware on every
broker, see `shared.broker`) and crosses the outbox in its `headers` column (`shared.outbox`),
so starting a campaign yields one trace: HTTP request, publish, consume, SMTP send, results.
Tests pass their own provider (with an in-memory exporter) instead of the global one, which
OpenTelemetry lets a process set only once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from fastapi import FastAPI
from opentelemetry import context, propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from shared.logs import PROBE_PATHS


def make_tracer_provider(service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    """A provider naming the service; spans leave the process only if an endpoint is set.

    Without an endpoint nothing is sampled: spans nobody exports cost ~20 % of the sender's CPU
    (a dozen per message), and the trace context still travels in headers and the outbox.
    """
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"mailer-{service_name}"}),
        sampler=None if otlp_endpoint else ALWAYS_OFF,
    )
    if otlp_endpoint:
        exporter = OTLPSpanExporter(endpoint=f"{otlp_endpoint.rstrip('/')}/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def traces(provider: trace.TracerProvider) -> bool:
    """Whether this provider records anything: without an exporter the instrumentation of the
    broker and the database is left out, not just its spans dropped (it costs per query)."""
    return getattr(provider, "sampler", None) is not ALWAYS_OFF


def instrument(app: FastAPI, provider: TracerProvider) -> None:
    """Trace the app's HTTP requests and, once per process, every asyncpg query."""
    if not traces(provider):
        return
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls=",".join(sorted(PROBE_PATHS))
    )
    # The package leaves `AsyncPGInstrumentor.__init__` unannotated.
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    # The asyncpg instrumentation patches the driver process-wide, so only the first provider counts.
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


def current_trace_headers() -> dict[str, str]:
    """The current trace context as headers, to store with work that continues later."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


@contextmanager
def resumed_trace(headers: Mapping[str, str]) -> Iterator[None]:
    """Continue, inside the block, the trace whose context `current_trace_headers` stored."""
    token = context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        context.detach(token)
