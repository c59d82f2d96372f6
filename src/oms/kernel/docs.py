"""The OpenAPI docs page (`/docs`) with its assets served by the service itself: the Swagger UI 5 that the
`fastapi-offline` package ships (MIT; Swagger UI itself is Apache-2.0), no CDN, and no inline script, so the
page works offline and under the back office's Content-Security-Policy."""

from __future__ import annotations

import html
from importlib.util import find_spec
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS: Final = "/docs-assets"
_INIT: Final = Path(__file__).with_name("docs_init.js")
# The package's own helper needs its default URLs; only its files are used here.
_SWAGGER_UI: Final = Path(find_spec("fastapi_offline").origin or "").parent / "static"  # type: ignore[union-attr]


def serve_docs(app: FastAPI) -> None:
    """Serve `/docs` for `app` (created with `docs_url=None`)."""
    app.mount(ASSETS, StaticFiles(directory=_SWAGGER_UI), name="docs-assets")

    @app.get("/docs-init.js", include_in_schema=False)
    async def docs_init() -> FileResponse:
        return FileResponse(_INIT, media_type="text/javascript")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        title = html.escape(f"{app.title} — API")
        openapi = html.escape(app.openapi_url or "/openapi.json")
        return HTMLResponse(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title>"
            f'<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">'
            f'<link rel="icon" href="{ASSETS}/favicon.png"></head>'
            f'<body><div id="swagger-ui" data-openapi="{openapi}"></div>'
            f'<script src="{ASSETS}/swagger-ui-bundle.js"></script>'
            '<script src="/docs-init.js"></script></body></html>'
        )
