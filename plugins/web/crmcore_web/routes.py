"""The console's routes under ``/console``: pages on :class:`ConsoleRoute`, sign-in and static files.

Every page is a :class:`ConsoleRoute`, the HTTP API's token route taking its token from the
session cookie instead of the ``Authorization`` header: the request acts as the signed-in
user, so the services ask ``authorize``, apply visibility and write the audit trail as for an
API call.  Without a valid session a page redirects to the sign-in form.  The sign-in form
and the static files are plain routes that act as nobody: they call no service but
``crm.users.verify_password`` and, for the user who just proved who they are,
``crm.tokens.create``.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Coroutine
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import attrs
from fastapi import APIRouter, Form, Query, Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

import crmcore
from crmcore.web import InvalidToken, Problem, TokenRoute, crm_of, present_token, run_sync

from . import account as account_pages
from . import drill as drills
from . import fonts, i18n, marketing, views
from . import session as sessions
from .rendering import PREFIX, render
from .settings import WebSettings

if TYPE_CHECKING:
    from crmcore import CRM

#: The audit trail's actor for a refused sign-in: nobody proved who they are.
ANONYMOUS = "anonymous"

#: The static files served from the package (and plotly.min.js from the plotly package).
STATIC = {"htmx.min.js": "text/javascript", "console.css": "text/css", "console.js": "text/javascript",
          "cjk-labels.otf": "font/otf"}

_ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (crmcore.NotFound, 404), (crmcore.UnknownComponent, 404), (crmcore.NotAuthorized, 403),
    (crmcore.ValidationError, 422),
    (crmcore.RecordArchived, 409), (crmcore.StaleVersion, 409))


def _locale(request: Request) -> str:
    console: sessions.ConsoleSession | None = getattr(request.state, "console", None)
    if console is not None:
        return console.locale
    return i18n.pick(request.query_params.get("lang"), request.headers.get("accept-language"))


class ConsoleRoute(TokenRoute):
    """A console page: acts as the session's user; no session, or an invalid one, signs in first.

    A state-changing request must carry the session's CSRF token in ``X-CSRF-Token`` (htmx
    sends it with every request: ``hx-headers`` on the page's body).
    """

    def take_credential(self, request: Request) -> Any:
        crm = crm_of(request)
        found = sessions.read(request, crm)
        if found is None:
            raise InvalidToken("sign in to the console")
        request.state.console = found
        if request.method not in sessions.SAFE_METHODS and not sessions.same(
                request.headers.get("x-csrf-token"), found.csrf):
            raise Problem(403, "the request's CSRF token is missing or wrong: reload the page", "csrf")
        return present_token(request, found.token)

    async def refused(self, request: Request, error: InvalidToken) -> Response:
        target = f"{PREFIX}/sign-in?next={quote(request.url.path)}"
        response: Response
        if request.headers.get("hx-request"):
            response = Response(status_code=200, headers={"HX-Redirect": target})
        else:
            response = RedirectResponse(target, status_code=303)
        sessions.clear(response)
        return response

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except crmcore.CRMError as error:  # a refused or missing record: a page saying so
                status = next((code for cls, code in _ERROR_STATUS if isinstance(error, cls)), 400)
                return render(request, "error.html", _locale(request), status=status, error=str(error),
                              status_code=status)

        return page_errors


def add_routes(router: APIRouter, crm: "CRM") -> None:
    """Add the console to the API's plugin router."""

    def page(path: str, methods: tuple[str, ...] = ("GET",),
             name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(endpoint: Callable[..., Any]) -> Callable[..., Any]:
            router.add_api_route(PREFIX + path, _current_generation(crm, endpoint), methods=list(methods),
                                 include_in_schema=False, response_class=HTMLResponse,
                                 route_class_override=ConsoleRoute, name=name)
            return endpoint
        return decorate

    # -- public: sign-in and static files ---------------------------------------------------
    limit = sessions.SignInLimit(crm)

    async def sign_in_form(request: Request) -> Response:
        return _sign_in_page(request, crm, error=None)

    async def sign_in(request: Request) -> Response:
        form = await request.form()
        login = str(form.get("login") or "").strip()
        password = str(form.get("password") or "")
        token = str(form.get("token") or "").strip()
        if not sessions.same(str(form.get("csrf") or ""), request.cookies.get(sessions.PRE_COOKIE)):
            return _sign_in_page(request, crm, error="csrf", status=403)
        address = _address(request)
        if not await run_sync(limit.allows, address, login):  # a guessing run waits, right or wrong
            return _sign_in_page(request, crm, error="rate", status=429, login=login)
        method = "token" if token else "password"
        if not token and await run_sync(limit.locked, login):  # locked: not even the right password
            await run_sync(audit_sign_in, crm, login, method, address, "locked")
            return _sign_in_page(request, crm, error="locked", status=429, login=login)
        try:
            made = await run_sync(_start_session, crm, login, password, token, _locale(request))
        except (InvalidToken, crmcore.CRMError):
            made = None
        if made is None:
            if not token:
                await run_sync(limit.failed, login)
            await run_sync(audit_sign_in, crm, login, method, address, "refused")
            return _sign_in_page(request, crm, error="refused", status=401, login=login)
        await run_sync(audit_sign_in, crm, made.login, method, address, "ok")
        target = str(form.get("next") or "")
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or not target.startswith(PREFIX + "/"):
            target = PREFIX + "/customers"  # never off the site (an open redirect)
        response = RedirectResponse(target, status_code=303)
        sessions.write(response, crm, made)
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.min.js":  # found, not imported: importing plotly costs a second
            spec = importlib.util.find_spec("plotly")
            assert spec is not None and spec.origin is not None, "plotly is a dependency of crmcore-web"
            path = Path(spec.origin).parent / "package_data" / "plotly.min.js"
            return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})
        if name == fonts.FULL:  # the whole face, from the installed font package (fonts.full_face)
            path = await run_sync(fonts.full_face)
            return FileResponse(path, media_type="font/otf", headers={"Cache-Control": "max-age=604800"})
        if name not in STATIC:
            return Response("not found", status_code=404)
        data = (resources.files("crmcore_web") / "static" / name).read_bytes()
        return Response(data, media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})

    router.add_route(PREFIX + "/sign-in", sign_in_form, methods=["GET"], include_in_schema=False)
    router.add_route(PREFIX + "/sign-in", sign_in, methods=["POST"], include_in_schema=False)
    router.add_route(PREFIX + "/static/{name}", static, methods=["GET"], include_in_schema=False)

    # -- pages -------------------------------------------------------------------------------
    @page("/sign-out", ("POST",))
    def sign_out(request: Request) -> Response:
        console: sessions.ConsoleSession = request.state.console
        if console.token_id is not None:
            try:
                crm.tokens.revoke(console.token_id)
            except crmcore.CRMError:
                pass  # already revoked or expired: signed out all the same
        response = Response(status_code=200, headers={"HX-Redirect": PREFIX + "/sign-in"})
        sessions.clear(response)
        return response

    @page("/", name="page:web console")  # crm serve prints its address
    def home(request: Request) -> Response:
        return RedirectResponse(PREFIX + "/customers", status_code=303)

    @page("/customers")
    def customers(request: Request, q: str | None = Query(None, max_length=200),
                  stage: str | None = Query(None, max_length=50), owner: str | None = Query(None, max_length=100),
                  region: str | None = Query(None, max_length=100),
                  sort: str = Query(views.SORTS[0], max_length=20),
                  cursor: str | None = Query(None, max_length=2000),
                  drill: str | None = Query(None, max_length=1000)) -> Response:
        filters = views.customer_filters(stage, owner, region)
        if drill and drill.startswith(views.WHERE):  # a report chart's point: its customers filter
            filters, meaning = drills.where_filters(drill)
            q, sort = None, views.SORTS[0]
            found = views.customers_page(crm, q, filters, sort, cursor) | {"drill": drill, "meaning": meaning}
        elif drill and drill.startswith(views.REPORT):  # a report chart's element: what the report counts
            found = drills.report_customers(crm, drill, cursor)
            q, filters, sort = None, {}, views.SORTS[0]
        elif drill:  # a dashboard bar: the customers behind it (newest first; search and filters aside)
            found = drills.drilled_customers(crm, drill, cursor)
            q, filters, sort = None, {}, views.SORTS[0]
        else:
            found = views.customers_page(crm, q, filters, sort, cursor)
        # htmx asks for rows only (a new search, the next page); a page load gets the whole page.
        template = "customer_rows.html" if request.headers.get("hx-request") else "customers.html"
        return render(request, template, _locale(request), q=q or "", filters=filters, sort=sort, sorts=views.SORTS,
                      stages=[s.value for s in crmcore.LifecycleStage], active="customers", **found)

    @page("/customers/{customer_id}")
    def customer(request: Request, customer_id: int) -> Response:
        shown = views.customer_360(crm, customer_id)
        return render(request, "customer.html", _locale(request), editable=views.EDITABLE, active="customers",
                      value_of=views.field_value, zone=_zone(crm), **shown)

    @page("/customers/{customer_id}/fields/{name}")
    def field_form(request: Request, customer_id: int, name: str) -> Response:
        found = crm.customers.get(customer_id)
        return render(request, "field.html", _locale(request), customer=found, name=name, editing=True,
                      value=views.field_value(found, name), error=None)

    @page("/customers/{customer_id}/fields/{name}", ("POST",))
    def save_field(request: Request, customer_id: int, name: str, value: str = Form("", max_length=2000)) -> Response:
        try:
            saved = views.update_field(crm, customer_id, name, value)
        except crmcore.ValidationError as error:
            found = crm.customers.get(customer_id)
            return render(request, "field.html", _locale(request), customer=found, name=name, editing=True,
                          value=value, error=views.issue_for(error, name))
        return render(request, "field.html", _locale(request), customer=saved, name=name, editing=False,
                      value=views.field_value(saved, name), error=None)

    @page("/pipeline")
    def pipeline(request: Request, name: str = Query("default", max_length=100)) -> Response:
        shown = views.board(crm, name)
        return render(request, "pipeline.html", _locale(request), active="pipeline", **shown)

    @page("/deals/{deal_id}/move", ("POST",))
    def move_deal(request: Request, deal_id: int, stage: str = Form(..., max_length=50)) -> Response:
        error = None
        try:
            deal = crm.deals.move(deal_id, stage)
        except (crmcore.ValidationError, crmcore.NotAuthorized, crmcore.HookError) as refused:
            error = str(refused)
            deal = crm.deals.get(deal_id)
        earned = views.points_earned(crm, deal_id, deal.customer_id) if error is None else 0
        names = {deal.customer_id: crm.customers.get(deal.customer_id).name}
        return render(request, "deal_card.html", _locale(request), deal=deal, names=names, error=error,
                      earned=earned)

    @page("/dashboard")
    def dashboard(request: Request, start: date | None = Query(None), end: date | None = Query(None)) -> Response:
        today = crm.as_of().date()
        end = end or today
        start = start or (end.replace(day=1) - timedelta(days=1)).replace(day=1)
        if start > end:
            raise crmcore.ValidationError.single("start", "must not be after end", "dashboard")
        shown = views.dashboard(crm, start, end) | views.task_counts(crm)
        return render(request, "dashboard.html", _locale(request), active="dashboard", start=start, end=end,
                      currency=crm.config.default_currency, **shown)

    @page("/my-day")
    def my_day(request: Request) -> Response:
        console: sessions.ConsoleSession = request.state.console
        return render(request, "my_day.html", _locale(request), active="my-day", zone=_zone(crm),
                      **views.my_day(crm, console.login))

    @page("/tasks/{task_id}/done", ("POST",))
    def task_done(request: Request, task_id: int) -> Response:
        error = None
        try:
            task = crm.tasks.done(task_id)
        except (crmcore.ValidationError, crmcore.NotAuthorized, crmcore.HookError) as refused:
            error = str(refused)
            task = crm.tasks.get(task_id)
        names = {task.customer_id: crm.customers.get(task.customer_id).name}
        return render(request, "task_row.html", _locale(request), task=task, names=names, error=error,
                      now=crm.as_of(), zone=_zone(crm))

    @page("/reports")
    def reports(request: Request, name: str | None = Query(None, max_length=100),
                as_of: date | None = Query(None)) -> Response:
        listed = crm.reports.list()
        day = as_of or crm.as_of().date()
        shown = views.report_page(crm, name, day) if name else {"result": None, "tables": []}
        return render(request, "reports.html", _locale(request), active="reports", reports=listed, name=name,
                      as_of=day, **shown)

    # -- segments, campaigns, outbox (marketing.py: the services the CLI and the API call) --------
    @page("/segments")
    def segments(request: Request) -> Response:
        return render(request, "segments.html", _locale(request), active="segments", zone=_zone(crm),
                      **marketing.segments_page(crm))

    @page("/segments/run", ("POST",))
    def run_segments(request: Request, strategy: str = Form(..., max_length=100),
                     as_of: date | None = Form(None)) -> Response:
        return render(request, "segment_run.html", _locale(request), zone=_zone(crm), just_ran=True,
                      s=marketing.run_strategy(crm, strategy, as_of))

    @page("/campaigns")
    def campaigns(request: Request) -> Response:
        return render(request, "campaigns.html", _locale(request), active="campaigns",
                      **marketing.campaign_form(crm))

    def campaign_action(request: Request, action: Callable[..., dict[str, Any]], template: str, segment: str,
                        channel: str, purpose: str, as_of: date | None) -> Response:
        if purpose not in marketing.PURPOSES:
            raise crmcore.ValidationError.single("purpose", f"one of {', '.join(marketing.PURPOSES)}", "campaign")
        shown = action(crm, template, segment, channel, purpose, as_of)
        return render(request, "campaign_result.html", _locale(request), zone=_zone(crm), **shown)

    @page("/campaigns/preview", ("POST",))
    def preview_campaign(request: Request, template: str = Form(..., max_length=100),
                         segment: str = Form(..., max_length=200), channel: str = Form("", max_length=50),
                         purpose: str = Form("marketing", max_length=20), as_of: date | None = Form(None)) -> Response:
        return campaign_action(request, marketing.plan_campaign, template, segment, channel, purpose, as_of)

    @page("/campaigns/queue", ("POST",))
    def queue_campaign(request: Request, template: str = Form(..., max_length=100),
                       segment: str = Form(..., max_length=200), channel: str = Form("", max_length=50),
                       purpose: str = Form("marketing", max_length=20), as_of: date | None = Form(None)) -> Response:
        return campaign_action(request, marketing.queue_campaign, template, segment, channel, purpose, as_of)

    @page("/outbox")
    def outbox(request: Request, status: str | None = Query(None, max_length=20),
               before: int | None = Query(None, ge=1, le=2**63 - 1)) -> Response:
        return render(request, "outbox.html", _locale(request), active="outbox", zone=_zone(crm),
                      **marketing.outbox_page(crm, status, before))

    @page("/language", ("POST",))
    def language(request: Request, locale: str = Form(..., max_length=10)) -> Response:
        console: sessions.ConsoleSession = request.state.console
        response = Response(status_code=200, headers={"HX-Refresh": "true"})
        sessions.write(response, crm, attrs.evolve(console, locale=i18n.pick(locale)))
        return response

    @page("/account")
    def account(request: Request) -> Response:
        console: sessions.ConsoleSession = request.state.console
        return render(request, "account.html", _locale(request), active="account", error=None, changed=None,
                      has_password=crm.users.has_password(console.login))

    @page("/account/password", ("POST",))
    def change_password(request: Request, current: str = Form("", max_length=1024),
                        new: str = Form("", max_length=1024), repeat: str = Form("", max_length=1024)) -> Response:
        console: sessions.ConsoleSession = request.state.console
        try:
            revoked = account_pages.change_password(crm, limit, console, _address(request), current, new, repeat)
        except account_pages.Refused as refused:
            return render(request, "password_form.html", _locale(request), error=refused.reason,
                          detail=refused.detail, changed=None, has_password=True)
        response = render(request, "password_form.html", _locale(request), error=None, detail=None,
                          changed=revoked, has_password=True)
        # This session goes on under the new generation; every other one is refused from now on.
        sessions.write(response, crm, attrs.evolve(console, generation=sessions.generation(crm, console.login)))
        return response


def _current_generation(crm: "CRM", endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint``, refusing a session whose user's generation moved on (the password changed
    since it began): checked on the worker thread, in the unit that also checks the token."""

    def check(request: Request) -> None:
        console: sessions.ConsoleSession = request.state.console
        if not sessions.same(console.generation, sessions.generation(crm, console.login)):
            raise InvalidToken("the password changed since this session began: sign in again")

    @functools.wraps(endpoint)
    def checked(*args: Any, **kwargs: Any) -> Any:
        request: Request = kwargs["request"]
        if request.method not in sessions.SAFE_METHODS:
            check(request)
            return endpoint(*args, **kwargs)
        # A page that only reads runs in one read-only unit, which every service it calls joins:
        # one connection and transaction (one snapshot) for the whole page instead of one per call.
        with crm.unit(readonly=True):
            check(request)
            return endpoint(*args, **kwargs)

    return checked


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def audit_sign_in(crm: "CRM", login: str, method: str, address: str, outcome: str) -> None:
    """Record a sign-in in the audit trail: ``console.sign-in`` (as the user) or, refused,
    ``console.sign-in-refused`` / ``-locked`` (as ``anonymous``: nobody proved who they are).

    The record names the login tried, the method and the client address, never the password
    or token.  Attempts past the rate limit are not recorded: the limit already stops them,
    and a flood of them would only fill the trail.
    """
    action = "console.sign-in" if outcome == "ok" else f"console.sign-in-{outcome}"
    with crm.acting_as(login if outcome == "ok" else ANONYMOUS), crm.unit() as uow:
        uow.audit.record(action, "user", login[:100] or None, values={"method": method, "address": address})


def _zone(crm: "CRM") -> Any:
    return crm.as_of().tzinfo


def _sign_in_page(request: Request, crm: "CRM", error: str | None, status: int = 200, login: str = "") -> Response:
    csrf = request.cookies.get(sessions.PRE_COOKIE) or sessions.new_csrf()
    response = render(request, "sign_in.html", _locale(request), status=status, error=error, login=login,
                      next=request.query_params.get("next", ""), csrf=csrf)
    sessions.set_pre(response, crm, csrf)
    return response


def _start_session(crm: "CRM", login: str, password: str, token: str, locale: str) -> sessions.ConsoleSession | None:
    """A new session for a password (a session token is created) or an API token; None: refused."""
    if token:
        found = crm.tokens.authenticate(token)  # InvalidToken when it is not a live token
        return sessions.ConsoleSession(token=token, login=found, csrf=sessions.new_csrf(),
                                       locale=_user_locale(crm, found, locale),
                                       generation=sessions.generation(crm, found))
    if not login or not password or not crm.users.verify_password(login, password):
        return None
    generation = sessions.generation(crm, login)
    hours: int = crm.settings_for(WebSettings).session_hours
    with crm.acting(login):  # the user just proved who they are: they create their own token
        stored, secret = crm.tokens.create(login, account_pages.SESSION_TOKEN_NAME,
                                           expires_at=crm.as_of() + timedelta(hours=hours))
        chosen = _user_locale(crm, login, locale)
    return sessions.ConsoleSession(token=secret, login=login, csrf=sessions.new_csrf(), locale=chosen,
                                   token_id=stored.id, generation=generation)


def _user_locale(crm: "CRM", login: str, fallback: str) -> str:
    try:
        with crm.acting(login):
            user = crm.users.get(login)
    except crmcore.CRMError:
        return fallback
    return i18n.pick(user.locale, fallback) if user.locale else fallback
