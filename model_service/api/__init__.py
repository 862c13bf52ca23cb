"""The HTTP API: flask-smorest blueprints, registered by `register` (called from `create_app`).

| module     | blueprint | routes                                                     |
|------------|-----------|------------------------------------------------------------|
| `predict`  | `v1`      | POST /v1/predict, POST /v1/explain                         |
| `model`    | `v1`      | GET /v1/model                                              |
| `history`  | `v1`      | GET /v1/model/history (admin token)                        |
| `feedback` | `v1`      | POST /v1/feedback                                          |
| `admin`    | `admin`   | POST /v1/admin/reload                                      |
| `ops`      | `ops`     | GET /health, GET /ready (and the /metrics exporter)        |

`v1` (in `api.v1`) is shared by four modules because a blueprint's name is the OpenAPI tag of its
operations and the prefix of their endpoints (`v1.predict`), which label the request metrics.
Helpers: `spec` (the `ServiceApi`, error documentation), `inputs` (body, model, validation), `schemas`.
"""

from __future__ import annotations

# the v1 view modules in the order their paths appear in the OpenAPI document (and Swagger UI)
from model_service.api import predict  # isort: split

from model_service.api import model  # isort: split

from model_service.api import history  # isort: split

from model_service.api import feedback  # isort: split

from model_service.api import admin, ops, v1
from model_service.api.spec import ServiceApi

__all__ = ["register"]
VIEW_MODULES = (predict, model, history, feedback, admin, ops)


def register(api: ServiceApi) -> None:
    for blp in (v1.blp, admin.blp, ops.blp):
        api.register_blueprint(blp)
