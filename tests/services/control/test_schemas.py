"""The REST bodies' own rules, field by field."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from services.control.schemas import ChannelUpdate, RunCreate, TransmitterUpdate

_NUMERIC = [
    (model, name)
    for model in (ChannelUpdate, TransmitterUpdate, RunCreate)
    for name, field in model.model_fields.items()
    if any(t in str(field.annotation) for t in ("int", "float"))
]


def test_every_numeric_input_field_is_found() -> None:
    names = {name for _, name in _NUMERIC}
    assert {"snr_db", "k_factor", "seed", "delay_seconds", "erasure_prob"} <= names
    assert {"fixed_length", "target_accuracy", "confidence", "num_images", "rate"} <= names


@pytest.mark.parametrize(
    ("model", "name"), _NUMERIC, ids=[f"{m.__name__}.{n}" for m, n in _NUMERIC]
)
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_a_number(model: type[BaseModel], name: str, value: bool) -> None:
    with pytest.raises(ValidationError, match="not a boolean"):
        model.model_validate_json(f'{{"{name}": {str(value).lower()}}}')
