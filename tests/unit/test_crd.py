"""The generated CRD is a structural schema that declares every field the models have."""

from pydantic import BaseModel

from darwin_operator import api
from darwin_operator.crd import crd, openapi_schema


def walk(node, path="$"):
    yield path, node
    for key in ("properties", "additionalProperties"):
        children = node.get(key)
        if key == "properties" and children:
            for name, child in children.items():
                yield from walk(child, f"{path}.{name}")
        elif isinstance(children, dict):
            yield from walk(children, f"{path}.*")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def test_structural_every_node_has_a_type_and_no_json_schema_leftovers():
    for path, node in walk(openapi_schema()):
        assert not {"$ref", "$defs", "anyOf", "title", "allOf", "oneOf", "const"} & node.keys(), (
            path
        )
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        assert node.get("default", 0) is not None, path
        if node.get("type") == "object" and "properties" in node:
            assert "additionalProperties" not in node, path


def test_only_envvar_value_from_and_volume_sources_are_free_form():
    free = [p for p, n in walk(openapi_schema()) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert free == ["$.spec.engine.env[].valueFrom", "$.spec.pod.volumes[]"]


def test_int_or_string_fields():
    spec = openapi_schema()["properties"]["spec"]["properties"]
    for section, field in [
        ("rollout", "maxUnavailable"),
        ("rollout", "maxSurge"),
        ("resources", "cpu"),
        ("resources", "memory"),
        ("resources", "sharedMemory"),
    ]:
        node = spec[section]["properties"][field]
        assert node["x-kubernetes-int-or-string"] is True and "type" not in node


def test_spec_defaults_show_the_effective_spec():
    spec = openapi_schema()["properties"]["spec"]["properties"]
    assert spec["replicas"]["default"] == 1
    # Objects default to their complete default: the API server checks CEL on it as written.
    assert spec["engine"]["default"] == api.EngineSpec().model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert spec["placement"]["default"]["gpuResource"] == "nvidia.com/gpu"
    assert spec["engine"]["properties"]["image"]["default"] == "vllm/vllm-openai:v0.33.0"
    assert spec["engine"]["properties"]["extraArgs"]["default"] == []
    assert spec["placement"]["properties"]["gang"]["default"] == "Gate"
    assert spec["rollout"]["properties"]["maxUnavailable"]["default"] == 1
    assert "default" not in spec["model"]["properties"]["revision"]


def test_status_has_no_defaults():
    status = openapi_schema()["properties"]["status"]
    assert all("default" not in node for _, node in walk(status))


def declared_paths(model: type[BaseModel], prefix: str) -> set[str]:
    paths = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}"
        paths.add(path)
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                suffix = "[]" if getattr(annotation, "__origin__", None) is list else ""
                paths |= declared_paths(candidate, path + suffix)
    return paths


def test_every_model_field_is_in_the_schema_so_nothing_is_pruned():
    schema_paths = {path for path, _ in walk(openapi_schema())}
    assert declared_paths(api.DarwinEndpointSpec, "$.spec") <= schema_paths
    assert declared_paths(api.DarwinEndpointStatus, "$.status") <= schema_paths


def test_rules_sit_on_their_models():
    schema = openapi_schema()
    spec = schema["properties"]["spec"]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("podsPerGroup" in rule for rule in rules)
    engine_rules = spec["properties"]["engine"]["x-kubernetes-validations"]
    assert [r["fieldPath"] for r in engine_rules] == [".extraArgs", ".env", ".backend"]
    assert "self.metadata.name" in schema["x-kubernetes-validations"][0]["rule"]


def test_lists_and_strings_cel_iterates_are_bounded():
    engine = openapi_schema()["properties"]["spec"]["properties"]["engine"]["properties"]
    assert engine["extraArgs"]["maxItems"] and engine["extraArgs"]["items"]["maxLength"]
    assert engine["env"]["maxItems"] and engine["env"]["items"]["properties"]["name"]["maxLength"]


def test_names_subresources_and_columns():
    definition = crd()
    assert definition["metadata"]["name"] == "darwinendpoints.serving.darwin.ai"
    names = definition["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "DarwinEndpoint",
        "darwinendpoints",
        ["dwe"],
    )
    assert names["categories"] == api.CATEGORIES
    (version,) = definition["spec"]["versions"]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Ready"] == ".status.ready"
    assert columns["Phase"] == ".status.phase"
    assert columns["Model"] == ".spec.model.name"
    assert columns["TP"] == ".spec.engine.tensorParallelSize"
    assert columns["PP"] == ".spec.engine.pipelineParallelSize"
    assert columns["Age"] == ".metadata.creationTimestamp"
