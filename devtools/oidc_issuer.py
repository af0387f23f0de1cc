"""A small OpenID Connect issuer for development and tests: discovery, an authorize page that
asks for a name and an e-mail (no passwords: anyone may be anyone), token (authorization code,
client secret basic or post), JWKS and userinfo. ID tokens are RS256-signed with a key made at
start (joserfc, the JOSE library authlib itself moved to).

It exists so the console's real single sign-on path (authlib, discovery, code exchange, ID token
signature, nonce) is exercised end to end without an identity provider.

    python -m devtools.oidc_issuer --port 8090 --client console:segredo
    OIDC_ISSUER_URL=http://127.0.0.1:8090 OIDC_CLIENT_ID=console OIDC_CLIENT_SECRET=segredo make run
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

TOKEN_LIFETIME = 300


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    nonce: str | None
    claims: dict[str, Any]
    expires: float


@dataclass
class Issuer:
    """The issuer's state: its URL, registered clients (id → secret) and what it handed out."""

    url: str
    clients: dict[str, str]
    key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"})
    )
    codes: dict[str, _Grant] = field(default_factory=dict)
    access_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def kid(self) -> str:
        """The signing key's id (its thumbprint)."""
        return str(self.key.thumbprint())

    def id_token(self, grant: _Grant) -> str:
        """The signed ID token of a grant."""
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": grant.client_id,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
            **grant.claims,
            **({"nonce": grant.nonce} if grant.nonce else {}),
        }
        return jwt.encode({"alg": "RS256", "kid": self.kid}, claims, self.key)


def _error(code: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)


_PAGE = """<!doctype html><html lang="pt-BR"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Login único (desenvolvimento)</title>
<style>body{{font-family:system-ui,sans-serif;background:#f5f7fa;margin:0}}main{{max-width:380px;margin:10vh auto;
background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:1.5rem}}label{{display:block;font-weight:600;
margin:.8rem 0 .3rem}}input{{width:100%;padding:.5rem;box-sizing:border-box;border:1px solid #cbd2d9;border-radius:6px}}
button{{margin-top:1.2rem;width:100%;padding:.6rem;background:#1c4f8a;color:#fff;border:0;border-radius:6px;font-size:1rem}}
p{{color:#616e7c;font-size:.9rem}}</style></head><body><main>
<h1>Login único</h1><p>Provedor de identidade de desenvolvimento: informe quem você é.</p>
<form method="post" action="{action}">{hidden}
<label for="name">Nome</label><input id="name" name="name" required>
<label for="email">E-mail</label><input id="email" name="email" type="email" required>
<button type="submit">Entrar</button></form></main></body></html>"""

_AUTHORIZE_PARAMS = ("client_id", "redirect_uri", "state", "nonce", "scope", "response_type")


def create_issuer_app(issuer: Issuer) -> Starlette:
    """The issuer's HTTP endpoints."""

    async def discovery(_: Request) -> JSONResponse:
        return JSONResponse(
            {
                "issuer": issuer.url,
                "authorization_endpoint": f"{issuer.url}/authorize",
                "token_endpoint": f"{issuer.url}/token",
                "userinfo_endpoint": f"{issuer.url}/userinfo",
                "jwks_uri": f"{issuer.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "claims_supported": ["sub", "name", "email", "email_verified"],
            }
        )

    async def jwks(_: Request) -> JSONResponse:
        return JSONResponse({"keys": [{**issuer.key.as_dict(private=False), "kid": issuer.kid}]})

    async def authorize(request: Request) -> Response:
        params = dict(request.query_params) if request.method == "GET" else dict(await request.form())
        client_id, redirect_uri = str(params.get("client_id", "")), str(params.get("redirect_uri", ""))
        if client_id not in issuer.clients:
            return _error("unauthorized_client", "unknown client_id")
        if params.get("response_type") != "code" or not redirect_uri.startswith(("http://", "https://")):
            return _error("invalid_request", "response_type=code and an http(s) redirect_uri are required")
        if request.method == "GET":
            hidden = "".join(
                f'<input type="hidden" name="{name}" value="{html.escape(str(params[name]))}">'
                for name in _AUTHORIZE_PARAMS
                if name in params
            )
            return HTMLResponse(_PAGE.format(action=f"{issuer.url}/authorize", hidden=hidden))
        name, email = str(params.get("name", "")).strip(), str(params.get("email", "")).strip().lower()
        if not name or "@" not in email:
            return _error("invalid_request", "name and email are required")
        code = secrets.token_urlsafe(24)
        issuer.codes[code] = _Grant(
            client_id=client_id,
            redirect_uri=redirect_uri,
            nonce=str(params["nonce"]) if params.get("nonce") else None,
            claims={
                "sub": hashlib.sha256(email.encode()).hexdigest()[:24],
                "name": name,
                "email": email,
                "email_verified": True,
            },
            expires=time.monotonic() + 60,
        )
        answer = {"code": code, **({"state": params["state"]} if params.get("state") else {})}
        separator = "&" if "?" in redirect_uri else "?"
        return RedirectResponse(f"{redirect_uri}{separator}{urlencode(answer)}", status_code=302)

    def _client(request: Request, form: dict[str, Any]) -> str | None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            client_id, _, secret = base64.b64decode(value).decode().partition(":")
        if isinstance(client_id, str) and issuer.clients.get(client_id) == secret:
            return client_id
        return None

    async def token(request: Request) -> JSONResponse:
        form = dict(await request.form())
        client_id = _client(request, form)
        if client_id is None:
            return _error("invalid_client", "client authentication failed", 401)
        grant = issuer.codes.pop(str(form.get("code", "")), None)
        if (
            form.get("grant_type") != "authorization_code"
            or grant is None
            or grant.expires < time.monotonic()
        ):
            return _error("invalid_grant", "unknown, used or expired code")
        if grant.client_id != client_id or grant.redirect_uri != form.get("redirect_uri"):
            return _error("invalid_grant", "code issued to another client or redirect_uri")
        access = secrets.token_urlsafe(24)
        issuer.access_tokens[access] = grant.claims
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME,
                "scope": "openid email profile",
                "id_token": issuer.id_token(grant),
            }
        )

    async def userinfo(request: Request) -> JSONResponse:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        claims = issuer.access_tokens.get(value) if scheme.lower() == "bearer" else None
        if claims is None:
            return _error("invalid_token", "unknown access token", 401)
        return JSONResponse(claims)

    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/jwks", jwks),
            Route("/authorize", authorize, methods=["GET", "POST"]),
            Route("/token", token, methods=["POST"]),
            Route("/userinfo", userinfo),
        ]
    )


class RunningIssuer:
    """The issuer served by uvicorn in a thread on 127.0.0.1:`port` (tests, `make run`)."""

    def __init__(self, port: int, clients: dict[str, str]) -> None:
        self.issuer = Issuer(url=f"http://127.0.0.1:{port}", clients=clients)
        config = uvicorn.Config(
            create_issuer_app(self.issuer), host="127.0.0.1", port=port, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="oidc-issuer")

    @property
    def url(self) -> str:
        """The issuer URL (OIDC_ISSUER_URL)."""
        return self.issuer.url

    def start(self, timeout: float = 10.0) -> RunningIssuer:
        """Serve, returning once the port accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the OIDC issuer did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=10)


def main() -> None:
    """Run the issuer in the foreground."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--client", action="append", default=[], help="client_id:secret (repeatable)")
    args = parser.parse_args()
    clients = dict(c.split(":", 1) for c in args.client) or {"console": "segredo-de-desenvolvimento"}
    running = RunningIssuer(args.port, clients).start()
    print(f"OIDC issuer at {running.url} with clients {', '.join(clients)}. Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        running.stop()


if __name__ == "__main__":
    main()
