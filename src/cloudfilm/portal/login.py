"""Opening a session other than by a film's code: a share link, a phone number, and logout.

The phone login answers the same whether or not the number has films (no probing of who is a
patient here); the SMS code is checked with the same limits and lockouts as a film's code.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cloudfilm.http.problems import Problem
from cloudfilm.http.security import ArchiveDep, client_address
from cloudfilm.portal.api import verify_problem
from cloudfilm.portal.notify import CODE_MESSAGE, make_notifier
from cloudfilm.portal.persons import link_proven_phone
from cloudfilm.portal.sessions import end_session, share_films, start_session
from cloudfilm.portal.shares import open_share
from cloudfilm.portal.verify import VerifyFailed, send_phone_code, verify_phone_code

router = APIRouter(prefix="/api", tags=["cloud film"])


class OpenShareIn(BaseModel):
    token: str = Field(max_length=100)
    code: str = Field(default="", max_length=16)


@router.post("/shares/open", summary="Open a share link (sets the visitor's session)")
def post_open_share(body: OpenShareIn, request: Request, archive: ArchiveDep) -> Any:
    try:
        share = open_share(archive, body.token, body.code, client_address(request))
    except VerifyFailed as exc:
        raise verify_problem(exc) from None
    films = share_films(archive, share)
    target = f"/p/films/{films[0].film_id}" if len(films) == 1 else "/p/"
    response = JSONResponse({"share_id": share.share_id, "next": target})
    start_session(archive, request, response, "share", share.share_id)
    return response


class PhoneIn(BaseModel):
    phone: str = Field(min_length=6, max_length=32)


@router.post("/patient/otp", summary="Send a one-time code to a phone number by SMS")
def post_otp(body: PhoneIn, request: Request, archive: ArchiveDep) -> Any:
    try:
        made = send_phone_code(archive, body.phone, client_address(request))
    except VerifyFailed as exc:
        raise verify_problem(exc) from None
    if made is not None:
        _key, code = made
        notifier = getattr(request.app.state, "film_notifier", None) or make_notifier(
            archive.settings
        )
        try:
            notifier.send(body.phone, CODE_MESSAGE.format(code=code))
        except Exception:
            raise Problem(503, "the SMS could not be sent; try again later") from None
    return {
        "sent": True,
        "zh": "如果该号码有云胶片，验证码已发送。",
        "en": "If this number has films, a code was sent.",
    }


class PhoneCodeIn(BaseModel):
    phone: str = Field(min_length=6, max_length=32)
    code: str = Field(max_length=16)


@router.post("/patient/otp/verify", summary="Check the SMS code: a session for every film")
def post_otp_verify(body: PhoneCodeIn, request: Request, archive: ArchiveDep) -> Any:
    try:
        key = verify_phone_code(archive, body.phone, body.code, client_address(request))
    except VerifyFailed as exc:
        raise verify_problem(exc) from None
    link_proven_phone(archive, body.phone, key)
    response = JSONResponse({"next": "/p/"})
    start_session(archive, request, response, "phone", key)
    return response


@router.post("/logout", summary="End the browser session")
def post_logout(request: Request, archive: ArchiveDep) -> Any:
    response = JSONResponse({"next": "/p/"})
    end_session(archive, request, response)
    return response
