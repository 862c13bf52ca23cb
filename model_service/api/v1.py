"""The `v1` blueprint: /v1/predict and /v1/explain (`api.predict`), /v1/model (`api.model`) and
/v1/feedback (`api.feedback`) add their views to it. One blueprint for the /v1 group: its name is the
OpenAPI tag of these operations and the prefix of their Flask endpoints (`v1.predict`), which label the
request metrics the dashboards and alerts select on."""

from __future__ import annotations

from flask_smorest import Blueprint

blp = Blueprint(
    "v1", "model_service.api", url_prefix="/v1", description="Predictions, model information, feedback"
)
