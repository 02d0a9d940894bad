"""The one-pass decoder's structs hold the PSA models' fields, no more and no fewer.

``validation.staged_json`` mirrors :mod:`psa_erp_sync.clients.psa_models` field by field for
speed; the models stay the definition of a valid payload. A field added to, renamed in or removed
from a model without the same change in its struct fails here, before it could make the fast path
read a payload differently from the model.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from pydantic import BaseModel

from psa_erp_sync.clients import psa_models as models
from psa_erp_sync.validation import staged_json

PAIRS = [
    (staged_json._IdName, models.IdName),
    (staged_json._ClientRef, models.ClientRef),
    (staged_json._ProjectRef, models.ProjectRef),
    (staged_json._InvoiceRef, models.InvoiceRef),
    (staged_json._ExpenseCategoryRef, models.ExpenseCategoryRef),
    (staged_json._ExternalReference, models.ExternalReference),
    (staged_json._UserAssignment, models.UserAssignment),
    (staged_json._TaskAssignment, models.TaskAssignment),
    (staged_json._TimeEntryJson, models.TimeEntry),
    (staged_json._ExpenseJson, models.Expense),
]


def _struct_defaults(struct: type[msgspec.Struct]) -> dict[str, Any]:
    fields = struct.__struct_fields__
    defaults = struct.__struct_defaults__
    return dict(zip(fields[len(fields) - len(defaults) :], defaults, strict=True))


@pytest.mark.parametrize(("struct", "model"), PAIRS, ids=[m.__name__ for _, m in PAIRS])
def test_each_struct_holds_its_model_s_fields(struct: type[msgspec.Struct], model: type[BaseModel]) -> None:
    assert set(struct.__struct_fields__) == set(model.model_fields)


@pytest.mark.parametrize(("struct", "model"), PAIRS, ids=[m.__name__ for _, m in PAIRS])
def test_a_field_is_optional_in_the_struct_only_where_the_model_has_a_default(
    struct: type[msgspec.Struct], model: type[BaseModel]
) -> None:
    defaults = _struct_defaults(struct)
    required = {name for name, info in model.model_fields.items() if info.is_required()}
    assert required == set(struct.__struct_fields__) - set(defaults)
    for name, default in defaults.items():
        info = model.model_fields[name]
        if default is not msgspec.NODEFAULT and info.default_factory is None:
            assert default == info.default, name
