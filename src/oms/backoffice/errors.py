"""Errors as pages (the services answer JSON; people get HTML): sign-in needed, refused, not found."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from oms.backoffice.headers import HEADERS
from oms.backoffice.services import ServiceError
from oms.backoffice.sessions import AdminOnly, CsrfRefused, LoginRequired, clear_session
from oms.backoffice.views import is_htmx, render, see_other

log = logging.getLogger(__name__)

TITLES = {
    400: "That request is not valid",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Not possible now",
    422: "Not valid",
    429: "Too many attempts",
    500: "Something went wrong",
    503: "A service is unavailable",
}


def error_page(request: Request, status: int, message: str) -> Response:
    title = TITLES.get(status, "Something went wrong")
    return render(request, "error.html", {"status": status, "title": title, "message": message}, status)


def to_login(request: Request, notice: str | None = None) -> Response:
    """Send the visitor to the sign-in page, and back here afterwards (htmx: the whole page)."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = {"next": here if request.method == "GET" and not is_htmx(request) else "/"}
    if notice:
        query["notice"] = notice
    url = f"/login?{urlencode(query)}"
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return see_other(url)


def install_page_errors(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _: LoginRequired) -> Response:
        return to_login(request)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _: CsrfRefused) -> Response:
        message = "This form did not come from this site, or it has expired: reload the page and try again."
        return error_page(request, 403, message)

    @app.exception_handler(AdminOnly)
    async def admin_only(request: Request, _: AdminOnly) -> Response:
        return error_page(request, 403, "This page is for admins only.")

    @app.exception_handler(ServiceError)
    async def refused(request: Request, exc: ServiceError) -> Response:
        if exc.status == 401:
            response = to_login(request, "expired")
            clear_session(request, response)
            return response
        if exc.status >= 500:
            return error_page(request, 503, exc.message)
        return error_page(request, exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
        return error_page(request, exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if any(error["loc"][0] == "path" for error in exc.errors()):
            return error_page(request, 404, "There is no such page.")
        return error_page(request, 400, "Some of the values in the address or the form are not valid.")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        page = error_page(request, 500, "Please try again; if it keeps happening, tell an admin.")
        page.headers.update(HEADERS)  # answered outside the middleware that adds them to every other page
        return page
