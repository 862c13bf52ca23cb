"""The `admin` blueprint: POST /v1/admin/reload (bearer token)."""

from __future__ import annotations

import json

from flask import Response
from flask_smorest import Blueprint

from model_service.api.schemas import ReloadQuery, ReloadResponse
from model_service.api.spec import ADMIN, errors
from model_service.auth import require_admin
from model_service.state import services

blp = Blueprint(
    "admin", "model_service.api", url_prefix="/v1/admin", description="Operator endpoints (admin token)"
)


@blp.route("/reload", methods=["POST"])
@blp.doc(security=ADMIN, summary="Check the registry alias now and load what it points at")
@require_admin  # before the query is read: no credentials, no validation (401, not 422)
@blp.arguments(ReloadQuery, location="query")
@blp.alt_response(200, schema=ReloadResponse, success=True, description="reloaded (or already current)")
@blp.alt_response(503, schema=ReloadResponse, description="loading failed: the old model keeps serving")
@errors(blp, 401, 403, 422)
def reload(query):
    # no docstring: flask-smorest would put it in the OpenAPI document
    # this worker checks the alias at once; the others are told through the trigger file
    manager = services().manager
    result = manager.check(force=query["force"])
    manager.request_reload_everywhere(force=query["force"])
    return Response(json.dumps(result), status=503 if result["error"] else 200, mimetype="application/json")
