"""GET /v1/model: the version being served (metrics, feature schema, importance, commit)."""

from __future__ import annotations

import json

from flask import Response

from model_service.api.inputs import current_model
from model_service.api.schemas import ModelResponse
from model_service.api.spec import API_KEY, errors
from model_service.api.v1 import blp
from model_service.auth import require_api_key


@blp.route("/model", methods=["GET"])
@blp.doc(security=API_KEY, summary="The model version being served")
@blp.alt_response(200, schema=ModelResponse, success=True, description="name, version, metrics, schema")
@errors(blp, 401, 403, 503)
@require_api_key
def model_info():
    return Response(json.dumps(current_model().describe()), mimetype="application/json")
