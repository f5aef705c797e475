"""The OpenAPI 3.1 document of the server, built by hand so it says what the routes really do.

A test checks that every route of the app appears here with its methods.
"""

from __future__ import annotations

from typing import Any, Final

from tripwire import __version__
from tripwire.server.admin import DEFAULT_LIMIT, MAX_LIMIT
from tripwire.server.ingest import BATCH_PATHS, MAX_BATCH_BYTES, MAX_EVENT_BYTES, SINGLE_TYPES

_OBJECT: Final = {"type": "object", "additionalProperties": True}
_ISO: Final = {"type": "string", "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _retry(description: str) -> dict[str, Any]:
    reply = _error(description)
    reply["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    return reply


_INGEST_ERRORS: Final = {
    "400": _error("malformed JSON, not an object, or every event bad (each named in `errors`)"),
    "401": _error("no valid write key: pass it as the Basic user name or as `writeKey` in the body"),
    "413": _error("the event (32 KB) or the batch (500 KB) is too large, measured after decompression"),
    "415": _error("a Content-Encoding other than gzip"),
    "429": _retry("the ingest queue is full; retry after Retry-After seconds"),
    "503": _retry("the store is not taking writes; retry after Retry-After seconds"),
}
_ADMIN_ERRORS: Final = {"401": _error("no valid admin token (Authorization: Bearer TOKEN)")}


def _param(name: str, description: str, schema: dict[str, Any], where: str = "query") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "description": description, "schema": schema}


_LIMIT: Final = _param(
    "limit", f"at most this many (default {DEFAULT_LIMIT})", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
)
_USER: Final = _param("user", "only this user (userId or anonymousId)", {"type": "string"})


def _ingest_single(type_: str) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["ingest"],
            "summary": f"Send one {type_} event (Segment Tracking API)",
            "description": f"`type` is set to `{type_}`. The body is at most {MAX_EVENT_BYTES} bytes "
            "after decompression; `Content-Encoding: gzip` is accepted.",
            "security": [{"writeKey": []}, {}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Event")}}},
            "responses": {"200": _json(_ref("Success"), "the event is stored durably"), **_INGEST_ERRORS},
        }
    }


def _ingest_batch(path: str) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["ingest"],
            "summary": "Send a batch of events (Segment Tracking API)"
            + (", same as /v1/batch" if path != "/v1/batch" else ""),
            "description": f"At most {MAX_BATCH_BYTES} bytes a request and {MAX_EVENT_BYTES} bytes an event, after "
            "decompression. `sentAt` and `context` apply to every event (the event's own fields win; contexts "
            "merge by top-level key). Bad events are listed in `errors`; the others are kept.",
            "security": [{"writeKey": []}, {}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Batch")}}},
            "responses": {
                "200": _json({"oneOf": [_ref("Success"), _ref("Partial")]}, "the good events are stored durably"),
                **_INGEST_ERRORS,
            },
        }
    }


def _get(
    summary: str, reply: dict[str, Any], *, tag: str, params: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    operation: dict[str, Any] = {"tags": [tag], "summary": summary, "responses": {"200": reply}}
    if params:
        operation["parameters"] = params
    if tag == "admin":
        operation["security"] = [{"adminToken": []}]
        operation["responses"].update(_ADMIN_ERRORS)
    return {"get": operation}


def _list_of(key: str, item: str) -> dict[str, Any]:
    return {"type": "object", "required": [key], "properties": {key: {"type": "array", "items": _ref(item)}}}


_SCHEMAS: Final[dict[str, Any]] = {
    "Event": {
        "type": "object",
        "description": "A Segment-format event; see the Segment Tracking API spec.",
        "properties": {
            "type": {"enum": ["track", "page", "screen", "identify", "alias", "group"]},
            "event": {"type": "string"},
            "name": {"type": "string"},
            "userId": {"type": "string"},
            "anonymousId": {"type": "string"},
            "previousId": {"type": "string"},
            "messageId": {"type": "string", "description": "idempotency key; the server makes one when absent"},
            "timestamp": _ISO,
            "originalTimestamp": _ISO,
            "sentAt": _ISO,
            "properties": _OBJECT,
            "traits": _OBJECT,
            "context": _OBJECT,
            "writeKey": {"type": "string", "description": "the write key, when not sent as Basic auth"},
        },
        "additionalProperties": True,
    },
    "Batch": {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {"type": "array", "items": _ref("Event")},
            "sentAt": _ISO,
            "context": _OBJECT,
            "writeKey": {"type": "string"},
        },
    },
    "Success": {"type": "object", "properties": {"success": {"const": True}}},
    "EventProblem": {
        "type": "object",
        "properties": {"index": {"type": "integer"}, "field": {"type": "string"}, "message": {"type": "string"}},
    },
    "Partial": {
        "type": "object",
        "properties": {
            "success": {"const": True},
            "accepted": {"type": "integer", "description": "events stored (late and duplicate ones included)"},
            "errors": {"type": "array", "items": _ref("EventProblem")},
        },
    },
    "Error": {
        "type": "object",
        "required": ["success", "code", "message"],
        "properties": {
            "success": {"const": False},
            "code": {"type": "string"},
            "message": {"type": "string"},
            "errors": {"type": "array", "items": _ref("EventProblem")},
            "field": {"type": "string", "description": "the field of a batch envelope that is wrong"},
            "parameter": {"type": "string", "description": "the query parameter that is wrong"},
            "problems": {"type": "array", "items": _ref("RuleProblem")},
        },
    },
    "RuleProblem": {
        "type": "object",
        "properties": {
            "file": {"type": "string"},
            "line": {"type": ["integer", "null"]},
            "trigger": {"type": ["string", "null"]},
            "field": {"type": "string"},
            "message": {"type": "string"},
        },
    },
    "Trigger": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "shape": {"enum": ["count", "absence", "inactivity"]},
            "description": {"type": ["string", "null"]},
            "fires": {"type": "integer"},
            "suppressed": {"type": "integer"},
        },
        "additionalProperties": True,
    },
    "Fire": {
        "type": "object",
        "description": "A fire as SPEC section 4 defines it, with `detail` explaining a suppression.",
        "properties": {
            "trigger": {"type": "string"},
            "user_id": {"type": "string"},
            "key": {},
            "fire_time": _ISO,
            "fire_id": {"type": "string"},
            "events": {"type": "array", "items": {"type": "string"}},
            "suppressed": {"type": ["string", "null"]},
            "detail": {"type": ["string", "null"]},
        },
        "additionalProperties": True,
    },
    "User": {
        "type": "object",
        "description": "Traits, open windows, counts, recent events, and fires with their explanation.",
        "additionalProperties": True,
    },
    "LogEntry": {
        "type": "object",
        "properties": {
            "seq": {"type": "integer"},
            "message_id": {"type": "string"},
            "decision": {"enum": ["accepted", "late", "duplicate", "quarantined", "timers_quarantined"]},
            "received_at": _ISO,
            "event": _ref("Event"),
        },
        "additionalProperties": True,
    },
}


def _delivery_paths() -> dict[str, Any]:
    status = _param("status", "only deliveries in this status", {"enum": ["pending", "sending", "delivered", "dead",
                                                                           "dropped"]})  # fmt: skip
    paths = {
        "/api/deliveries": _get(
            "Deliveries, newest first: sent, held (with until when and why), dropped or dead (and why)",
            _json({"type": "object", "properties": {"deliveries": {"type": "array", "items": _OBJECT}}}, "deliveries"),
            tag="admin",
            params=[status, _USER, _param("fire", "only this fire's deliveries", {"type": "string"}), _LIMIT],
        ),
        "/api/deliveries/{delivery_id}": _get(
            "One delivery with every attempt (time, outcome, HTTP status, latency, error)",
            _json(_OBJECT, "the delivery"),
            tag="admin",
            params=[_param("delivery_id", "the delivery's id", {"type": "integer"}, where="path")],
        ),
        "/api/stats": _get(
            "Per action: attempts, successes, failures, latency; per trigger: fires, holdouts, conversions, lift",
            _json(_OBJECT, "the stats"),
            tag="admin",
        ),
    }
    paths["/api/deliveries/{delivery_id}"]["get"]["responses"]["404"] = _error("no such delivery")
    paths["/api/deliveries/retry"] = {
        "post": {
            "tags": ["admin"],
            "summary": "Queue dead deliveries again",
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {
                                    "type": "object",
                                    "required": ["ids"],
                                    "properties": {"ids": {"type": "array", "items": {"type": "integer"}}},
                                },
                                {"type": "object", "required": ["all"], "properties": {"all": {"const": True}}},
                            ]
                        }
                    }
                }
            },
            "security": [{"adminToken": []}],
            "responses": {
                "200": _json({"type": "object", "properties": {"retried": {"type": "integer"}}}, "how many"),
                "400": _error("the body names no deliveries"),
                **_ADMIN_ERRORS,
            },
        }
    }
    return paths


def _quarantine_paths() -> dict[str, Any]:
    entry = {
        "type": "object",
        "description": (
            "An event that could not be applied or saved, kept with why (kind event, with the event), or a"
            " user's timers set aside because their fire could not be written (kind timers, with the timers)."
        ),
        "properties": {
            "id": {"type": "integer"},
            "kind": {"enum": ["event", "timers"]},
            "message_id": {"type": "string"},
            "user_id": {"type": ["string", "null"]},
            "anonymous_id": {"type": ["string", "null"]},
            "timestamp": {"type": ["string", "integer"]},
            "quarantined_at": _ISO,
            "reason": {"type": "string"},
            "retried_at": {"type": ["string", "null"]},
            "retry_decision": {"type": ["string", "null"]},
            "event": _OBJECT,
            "timers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "trigger": {"type": "string"},
                        "key": {},
                        "deadline": {"type": "integer", "description": "epoch milliseconds"},
                        "events": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    }
    listing = {
        "type": "object",
        "properties": {
            "total": {"type": "integer"},
            "not_retried": {"type": "integer"},
            "events": {"type": "array", "items": entry},
        },
    }
    pending = _param("pending", "true: only events not retried yet", {"type": "string", "enum": ["true", "false"]})
    retried = {"type": "object", "properties": {"retried": {"type": "array", "items": _OBJECT}}}
    return {
        "/api/quarantine": _get(
            "Quarantined events, newest first", _json(listing, "the quarantine"), tag="admin", params=[pending, _LIMIT]
        ),
        "/api/quarantine/retry": {
            "post": {
                "tags": ["admin"],
                "summary": "Send quarantined events through again, as new arrivals",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}},
                                    {"type": "object", "required": ["all"], "properties": {"all": {"const": True}}},
                                ]
                            }
                        }
                    }
                },
                "security": [{"adminToken": []}],
                "responses": {
                    "200": _json(retried, "each retried event with its new decision"),
                    "400": _error("the body names no quarantined event"),
                    "404": _error("no such quarantined event"),
                    "409": _error("already_retried: sent through once already; not_retryable: a timers entry"),
                    **_ADMIN_ERRORS,
                },
            }
        },
    }


def _inbox_paths() -> dict[str, Any]:
    user = [
        _param("X-User-Id", "the user", {"type": "string"}, where="header"),
        _param("X-User-Token", "hex HMAC-SHA256 of the user id with the inbox secret", {"type": "string"},
               where="header"),
    ]  # fmt: skip
    errors = {"401": _error("no valid write key or user token"), "403": _error("the user token does not match")}
    listing = _get("The user's in-app messages, newest first", _json(_OBJECT, "the messages"), tag="inbox",
                   params=user)  # fmt: skip
    listing["get"]["security"] = [{"writeKey": []}]
    listing["get"]["responses"].update(errors)
    stream = _get(
        "Server-sent events: each new in-app message the moment it is sent",
        {"description": "an event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        tag="inbox",
        params=user,
    )
    stream["get"]["security"] = [{"writeKey": []}]
    stream["get"]["responses"].update(errors)
    read = {
        "post": {
            "tags": ["inbox"],
            "summary": "Mark messages read",
            "parameters": user,
            "security": [{"writeKey": []}],
            "requestBody": {"content": {"application/json": {"schema": _OBJECT}}},
            "responses": {"200": _json(_OBJECT, "the ids marked read"), **errors},
        }
    }
    return {"/v1/inbox": listing, "/v1/inbox/stream": stream, "/v1/inbox/read": read}


def build_openapi() -> dict[str, Any]:
    """The whole document."""
    paths: dict[str, Any] = {f"/v1/{type_}": _ingest_single(type_) for type_ in SINGLE_TYPES}
    paths.update({path: _ingest_batch(path) for path in BATCH_PATHS})
    paths["/api/triggers"] = _get(
        "Every trigger with its counts", _json(_list_of("triggers", "Trigger"), "the triggers"), tag="admin"
    )
    paths["/api/fires"] = _get(
        "Fires, newest first",
        _json(_list_of("fires", "Fire"), "the fires"),
        tag="admin",
        params=[
            _param("trigger", "only this trigger", {"type": "string"}),
            _USER,
            _param("since", "only fires at or after this ISO-8601 time", _ISO),
            _LIMIT,
        ],
    )
    paths["/api/users/{user_id}"] = _get(
        "One user's state and history",
        _json(_ref("User"), "the user"),
        tag="admin",
        params=[_param("user_id", "a userId or anonymousId", {"type": "string"}, where="path")],
    )
    paths["/api/users/{user_id}"]["get"]["responses"]["404"] = _error("no such user")
    paths["/api/events"] = _get(
        "The event log, newest first, with each event's decision",
        _json(_list_of("events", "LogEntry"), "the events"),
        tag="admin",
        params=[_USER, _LIMIT],
    )
    reload_reply = {
        "type": "object",
        "properties": {
            "reloaded": {"const": True},
            "file": {"type": "string"},
            "triggers": {"type": "array", "items": _ref("Trigger")},
        },
    }
    paths["/api/rules/reload"] = {
        "post": {
            "tags": ["admin"],
            "summary": "Read the rules file again",
            "description": "On any problem the running rules stay in force and every problem is listed.",
            "security": [{"adminToken": []}],
            "responses": {
                "200": _json(reload_reply, "the new rules are in force"),
                "422": _error("the rules file is invalid; `problems` lists every problem"),
                **_ADMIN_ERRORS,
            },
        }
    }
    paths.update(_delivery_paths())
    paths.update(_quarantine_paths())
    paths.update(_inbox_paths())
    paths["/api/openapi.json"] = _get("This document", _json(_OBJECT, "the OpenAPI document"), tag="operations")
    paths["/healthz"] = _get("The process is up", _json(_OBJECT, "always, while the process runs"), tag="operations")
    paths["/readyz"] = _get("The service is ready for events", _json(_OBJECT, "ready"), tag="operations")
    paths["/readyz"]["get"]["responses"]["503"] = _json(_OBJECT, "not ready (starting, recovering, stopping)")
    paths["/metrics"] = _get(
        "Prometheus metrics",
        {"description": "the Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
        tag="operations",
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tripwire",
            "version": __version__,
            "description": "Segment-compatible event ingest, and the admin API of a tripwire server.",
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "writeKey": {"type": "http", "scheme": "basic", "description": "the write key as the user name"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }
