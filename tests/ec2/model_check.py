"""Checks ec2local's XML against botocore's EC2 model, strictly.

botocore's parser silently skips elements it does not know and reads what it does
know by name, so a misspelt element is a field the SDK never sees. Every response a
client receives is walked here: each element must be a member of its shape (by the
model's locationName), lists must hold <item>s, and every leaf must parse as its type
(integers, booleans as true/false, timestamps as 2026-01-02T03:04:05.000Z, enums).
"""

import re
import xml.etree.ElementTree as ET

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
NAMESPACE = "{http://ec2.amazonaws.com/doc/2016-11-15/}"

# Actions whose answers were checked, with how many times.
checked = {}


def _tag(element):
    return element.tag[len(NAMESPACE):] if element.tag.startswith(NAMESPACE) else element.tag


def _leaf(element, shape, path):
    text = element.text or ""
    kind = shape.type_name
    if kind in ("integer", "long"):
        assert re.fullmatch(r"-?\d+", text), f"{path}: {text!r} is not an integer"
    elif kind == "double" or kind == "float":
        float(text)
    elif kind == "boolean":
        assert text in ("true", "false"), f"{path}: {text!r} is not a boolean"
    elif kind == "timestamp":
        assert TIMESTAMP.match(text), f"{path}: {text!r} is not an EC2 timestamp"
    elif kind == "string" and shape.enum and text:
        assert text in shape.enum, f"{path}: {text!r} is not one of {shape.name}'s values"
    assert len(element) == 0, f"{path}: a {kind} has child elements"


def _walk(element, shape, path):
    kind = shape.type_name
    if kind == "structure":
        members = {m.serialization.get("name", name): m for name, m in shape.members.items()}
        for child in element:
            tag = _tag(child)
            assert tag in members, f"{path}/{tag} is not a member of {shape.name}"
            _walk(child, members[tag], f"{path}/{tag}")
    elif kind == "list":
        for child in element:
            assert _tag(child) == "item", f"{path}: a list holds <item>s, not <{_tag(child)}>"
            _walk(child, shape.member, f"{path}/item")
    else:
        _leaf(element, shape, path)


def check(operation_model, body):
    """Raises AssertionError unless `body` is a valid answer to `operation_model`."""
    assert body.startswith(b"<?xml"), "the XML declaration must come first"
    root = ET.fromstring(body)
    action = operation_model.name
    if _tag(root) == "Response":  # an error document
        errors = root.find("Errors/Error")
        assert errors is not None and errors.find("Code") is not None, "an error needs Errors/Error/Code"
        assert root.find("RequestID") is not None, "an error needs its RequestID"
        return
    assert _tag(root) == f"{action}Response", f"the root is {root.tag}"
    assert root.tag.startswith(NAMESPACE), "the root needs EC2's namespace"
    children = list(root)
    assert children and _tag(children[0]) == "requestId", "requestId comes first"
    output = operation_model.output_shape
    if output is None:
        # Calls the model gives no output still answer <return>true</return> on AWS.
        rest = [(_tag(c), c.text) for c in children[1:]]
        assert rest in ([], [("return", "true")]), f"{action} has no output, yet {rest} was sent"
        checked[action] = checked.get(action, 0) + 1
        return
    for child in children[1:]:
        assert output is not None, f"{action} has no output, yet <{_tag(child)}> was sent"
        members = {m.serialization.get("name", name): m for name, m in output.members.items()}
        tag = _tag(child)
        assert tag in members, f"{action}: {tag} is not a member of {output.name}"
        _walk(child, members[tag], f"{action}/{tag}")
    checked[action] = checked.get(action, 0) + 1


def install(client):
    """Checks every answer `client` receives."""

    def after_call(http_response, model, **_):
        if http_response.status_code < 500:
            check(model, http_response.content)

    client.meta.events.register("after-call.ec2", after_call)
    return client
