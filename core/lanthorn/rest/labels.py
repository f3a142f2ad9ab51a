"""Labels on patients, studies, series and instances, and the list of labels in use.

``/tools/find`` selects resources by label (``Labels``, ``LabelsConstraint``).
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import BadRequest, InexistentItem
from ..types import PluginRoute, permitted
from .common import answer, resource_of, server_of, text
from .resources import LEVELS

#: Orthanc's rule: 1 to 64 ASCII letters, digits, dashes and underscores.
VALID_LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_label(label: str) -> str:
    if not VALID_LABEL.fullmatch(label):
        raise BadRequest(f'invalid label "{label}": use 1 to 64 ASCII letters, digits, '
                         '"-" or "_"')
    return label


def _label(request: Request) -> str:
    return check_label(request.path_params["label"])


def list_labels(request: Request) -> Response:
    return answer(server_of(request).index.labels_of(resource_of(request).id))


def has_label(request: Request) -> Response:
    """An empty answer when the resource has the label, 404 otherwise."""
    label = _label(request)
    if label not in server_of(request).index.labels_of(resource_of(request).id):
        raise InexistentItem(f'this resource has no label "{label}"')
    return text("")


def add_label(request: Request) -> Response:
    server_of(request).index.add_label(resource_of(request).id, _label(request))
    return text("")


def remove_label(request: Request) -> Response:
    server_of(request).index.remove_label(resource_of(request).id, _label(request))
    return text("")


def all_labels(request: Request) -> Response:
    return answer(server_of(request).index.all_labels())


def routes() -> list[PluginRoute]:
    one = f"/{LEVELS}/{{id}}/labels/{{label}}"
    return [
        *permitted("read",
                   Route(f"/{LEVELS}/{{id}}/labels", list_labels, methods=["GET"]),
                   Route(one, has_label, methods=["GET"]),
                   Route("/tools/labels", all_labels, methods=["GET"])),
        *permitted("write",
                   Route(one, add_label, methods=["PUT"]),
                   Route(one, remove_label, methods=["DELETE"])),
    ]
