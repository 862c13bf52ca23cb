"""GET /v1/model/history (admin token): the champion timeline, every move of the `champion` alias with
the records each version served until the next (core.store.champion_timeline, the prediction log)."""

from __future__ import annotations

import json

from flask import Response
from flask_smorest import abort
from sqlalchemy.exc import SQLAlchemyError

from core import store
from model_service.api.schemas import HistoryQuery, HistoryResponse
from model_service.api.spec import ADMIN, errors
from model_service.api.v1 import blp
from model_service.auth import require_admin
from model_service.state import services


def _iso(value) -> str | None:
    return None if value is None else store.as_utc(value).isoformat()


@blp.route("/model/history", methods=["GET"])
@blp.doc(security=ADMIN, summary="Every move of the champion: when, from, to, who, why, records served")
@require_admin  # before the query is read: no credentials, no validation (401, not 422)
@blp.arguments(HistoryQuery, location="query")
@blp.alt_response(200, schema=HistoryResponse, success=True, description="the newest moves, oldest first")
@errors(blp, 401, 403, 422, 503)
def model_history(query):
    state = services()
    name = state.settings.model_name
    try:
        if not state.plog.ensure_tables():
            raise SQLAlchemyError("tables not ready")
        moves = store.champion_timeline(state.plog.engine, name, query["limit"])
    except SQLAlchemyError:
        abort(
            503,
            message="the prediction log database is unavailable; retry later",
            headers={"Retry-After": "5"},
        )
    for move in moves:
        move["at"], move["until"] = _iso(move["at"]), _iso(move["until"])
    body = {"model_name": name, "limit": query["limit"], "count": len(moves), "moves": moves}
    return Response(json.dumps(body), mimetype="application/json")
