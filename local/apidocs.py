"""``GET /_local/openapi.json`` and ``GET /_local/docs``: the API's OpenAPI document and a reference to
browse it, served by the local stack with no network (Swagger UI's files come from the installed
``swagger-ui-py`` package, never a CDN).

``respond(request)`` answers those paths (and the UI's assets under ``/_local/docs/assets/``) and
returns None for anything else; the gateway's ``/_local`` dispatch calls it first.
"""

from __future__ import annotations

import importlib.util
import mimetypes
from pathlib import Path

from werkzeug.wrappers import Request, Response

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "docs" / "openapi.json"
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png")
ASSET_PREFIX = "/_local/docs/assets/"

# Relative URLs: the page works behind any prefix. The document is read on every request, so a
# `make openapi` shows at once.
INDEX = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>usermgmt API reference (local)</title>
<link rel="icon" href="docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  persistAuthorization: true
});
</script>
</body>
</html>
"""


def assets_dir() -> Path:
    """Swagger UI's static files inside the installed ``swagger_ui`` package (not imported: its
    framework glue needs more than the files)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the swagger-ui-py package is not installed (make venv)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def respond(request: Request) -> Response | None:
    """The answer for the API reference paths; None for every other path (or method)."""
    path = request.path
    if request.method not in ("GET", "HEAD"):
        return None
    if path == "/_local/openapi.json":
        return Response(DOCUMENT.read_bytes(), content_type="application/json", headers=_no_store())
    if path in ("/_local/docs", "/_local/docs/"):
        if path.endswith("/"):  # keep the relative URLs pointing at /_local/...
            return Response(status=308, headers={"Location": "/_local/docs"})
        return Response(INDEX, content_type="text/html; charset=utf-8", headers=_no_store())
    if path.startswith(ASSET_PREFIX):
        name = path.removeprefix(ASSET_PREFIX)
        if name not in ASSETS:
            return None
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response((assets_dir() / name).read_bytes(), content_type=content_type)
    return None


def _no_store() -> dict[str, str]:
    return {"Cache-Control": "no-store"}
