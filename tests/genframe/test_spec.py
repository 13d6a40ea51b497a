"""Spec loading, overrides, schema generation and the one-line errors for bad specs."""

from __future__ import annotations

import json

import pytest
import yaml

from genframe.api import load_system
from genframe.errors import SpecError
from genframe.spec.load import SCHEMA_COMMENT, apply_overrides, build_schema, load_spec, schema_json

from ..conftest import REPO, SPECS


def test_checked_in_schema_is_current():
    checked_in = (REPO / "schemas" / "spec.schema.json").read_text()
    assert checked_in == schema_json(), "schemas/spec.schema.json is stale: run genframe schema --out schemas/spec.schema.json"


def test_schema_is_generated_from_component_fields():
    schema = build_schema()
    gp = schema["$defs"]["constraint.gradient_penalty"]
    assert gp["properties"]["weight"]["default"] == 10.0
    assert gp["additionalProperties"] is False
    adam = schema["$defs"]["optimizer.adam"]["properties"]
    assert adam["betas"]["prefixItems"] == [{"type": "number"}, {"type": "number"}]
    assert adam["lr"]["exclusiveMinimum"] == 0
    trainer_types = schema["$defs"]["role.trainer"]["properties"]["type"]["enum"]
    assert {"autoencoding", "imle", "adversarial"} <= set(trainer_types)


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_validate_and_point_editors_at_the_schema(path):
    assert path.read_text().splitlines()[0] == SCHEMA_COMMENT
    system = load_system(str(path))
    assert system.stages


def test_overrides_use_dotted_paths_and_yaml_values():
    data = {"stages": [{"trainer": {"type": "adversarial", "steps": 5}}], "seed": 0}
    apply_overrides(data, ["stages.0.trainer.steps=12", "seed=3", "stages.0.trainer.betas=[0.0, 0.9]",
                           "stages.0.trainer.divergence.type=hinge"], "s.yaml")
    trainer = data["stages"][0]["trainer"]
    assert trainer["steps"] == 12 and data["seed"] == 3 and trainer["betas"] == [0.0, 0.9]
    assert trainer["divergence"] == {"type": "hinge"}


@pytest.mark.parametrize("override, message", [
    ("stages.5.trainer.steps=1", "--set stages.5.trainer.steps: stages has 1 items, no index 5"),
    ("stages.x.name=a", "--set stages.x.name: stages is a list, use an index instead of 'x'"),
    ("seed.value=1", "--set seed.value: seed is a int, it has no field 'value'"),
    ("nothing", "expected PATH=VALUE"),
])
def test_bad_overrides_are_named(override, message):
    with pytest.raises(SpecError, match=None) as info:
        apply_overrides({"stages": [{}], "seed": 0}, [override], "s.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("s.yaml: ")


def _error(spec: dict, write_spec, overrides=()) -> str:
    path = write_spec(spec)
    with pytest.raises(SpecError) as info:
        load_system(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(path + ": ")
    return message[len(path) + 2:]


def test_unknown_component_type_lists_known_names(tiny_spec, write_spec):
    tiny_spec["stages"][0]["trainer"]["loss"] = {"type": "l3"}
    message = _error(tiny_spec, write_spec)
    assert message.startswith("stages[0].trainer.loss.type: found 'l3'; allowed: ")
    assert "l1" in message and "lap1" in message


def test_unknown_divergence_via_override(write_spec):
    spec = yaml.safe_load((SPECS / "wgan_gp.yaml").read_text())
    message = _error(spec, write_spec, ["stages.0.trainer.divergence.type=hing"])
    assert message.startswith("stages[0].trainer.divergence.type: found 'hing'; allowed: ")
    assert "wasserstein" in message


def test_missing_required_field(tiny_spec, write_spec):
    del tiny_spec["sampler"]
    assert _error(tiny_spec, write_spec) == "sampler: missing required field"


def test_missing_component_type(tiny_spec, write_spec):
    del tiny_spec["components"]["generator"]["type"]
    assert _error(tiny_spec, write_spec) == "components.generator.type: missing required field"


def test_misspelt_field_names_the_allowed_ones(write_spec):
    spec = yaml.safe_load((SPECS / "wgan_gp.yaml").read_text())
    spec["stages"][0]["trainer"]["constraints"][0] = {"type": "gradient_penalty", "wieght": 10}
    message = _error(spec, write_spec)
    assert message.startswith("stages[0].trainer.constraints[0].wieght: unknown field 'wieght'; allowed: ")
    assert "weight" in message


@pytest.mark.parametrize("value, expected", [
    ({"type": "kl", "prior": "prior"}, "stages[0].trainer.latent_divergence.prior: unknown field 'prior'; "
                                       "allowed: type, weight"),
    ({"type": "nope"}, "stages[0].trainer.latent_divergence.type: found 'nope'; allowed: kl, mmd"),
])
def test_a_nullable_component_field_explains_its_component(value, expected, write_spec):
    spec = yaml.safe_load((SPECS / "vae.yaml").read_text())
    spec["stages"][0]["trainer"]["latent_divergence"] = value
    assert _error(spec, write_spec) == expected


def test_wrong_value_type(write_spec):
    spec = yaml.safe_load((SPECS / "wgan_gp.yaml").read_text())
    spec["stages"][0]["trainer"]["constraints"][0]["weight"] = "ten"
    assert _error(spec, write_spec) == \
        "stages[0].trainer.constraints[0].weight: found 'ten' (string), expected number"


@pytest.mark.parametrize("key, value, expected", [
    ("cuda_graphs", "maybe", "cuda_graphs: found 'maybe' (string), expected boolean or 'emulate'"),
    ("compile", 7, "compile: found 7 (integer), expected boolean or a mapping of backend, mode"),
])
def test_a_setting_with_alternatives_names_each(key, value, expected, tiny_spec, write_spec):
    tiny_spec[key] = value
    assert _error(tiny_spec, write_spec) == expected


def test_number_written_as_yaml_text_gets_a_hint(tmp_path):
    text = (SPECS / "wgan_gp.yaml").read_text().replace("lr: 1.0e-4", "lr: 1e-4")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_system(str(path))
    assert "stages[0].trainer.optimizer.lr: found '1e-4' (string), expected number" in str(info.value)
    assert "e.g. 1.0e-4" in str(info.value)


def test_value_out_of_bounds(tiny_spec, write_spec):
    tiny_spec["stages"][0]["trainer"]["epochs"] = 0
    assert _error(tiny_spec, write_spec) == \
        "stages[0].trainer.epochs: found 0: 0 is less than the minimum of 1"


def test_reference_to_undeclared_component(tiny_spec, write_spec):
    tiny_spec["stages"][1]["trainer"]["model"] = "mapr"
    assert _error(tiny_spec, write_spec) == ("stages[1].trainer.model: 'mapr' is not declared under components; "
                                             "latent_mapper or generator components: generator, mapper")


def test_reference_to_component_of_wrong_role(tiny_spec, write_spec):
    tiny_spec["stages"][1]["trainer"]["prior"] = "codes"
    assert _error(tiny_spec, write_spec) == \
        "stages[1].trainer.prior: 'codes' is an encoder, a prior is needed here"


def test_sampler_chain_roles(tiny_spec, write_spec):
    tiny_spec["sampler"] = ["mapper", "generator"]
    assert _error(tiny_spec, write_spec).startswith(
        "sampler[0]: 'mapper' is a latent_mapper; position 0 of the sampler chain needs a prior")
    tiny_spec["sampler"] = ["noise", "ghost", "generator"]
    assert _error(tiny_spec, write_spec).startswith("sampler[1]: 'ghost' is not declared under components")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ncomponents: {a: [1, 2}\n")
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    assert str(info.value).startswith(f"{path}: line 2, column ")


def test_yaml_tags_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_spec(str(path))


def test_schema_json_is_valid_json_schema():
    import jsonschema

    schema = json.loads(schema_json())
    jsonschema.Draft202012Validator.check_schema(schema)
