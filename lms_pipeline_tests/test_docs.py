"""The documentation says what the code does: the data dictionary is the one the pandera models generate."""

from __future__ import annotations

from pathlib import Path

from lms_pipeline import data_dictionary
from lms_pipeline.schemas import MODELS

ROOT = Path(__file__).resolve().parent.parent


def test_the_data_dictionary_is_the_one_the_models_generate() -> None:
    committed = data_dictionary.DOC_PATH.read_text()
    assert committed == data_dictionary.render(), (
        f"{data_dictionary.DOC_PATH.relative_to(ROOT)} differs from the pandera models in lms_pipeline/schemas.py: "
        f"run `{data_dictionary.COMMAND}` and commit the result"
    )


def test_the_data_dictionary_documents_every_table_and_column() -> None:
    text = data_dictionary.render()
    for name, model in MODELS.items():
        section = text.split(f"\n### {name}\n", 1)[1].split("\n### ", 1)[0]
        for column in model.to_schema().columns:
            assert f"| `{column}` |" in section, f"{name}.{column} is missing from the data dictionary"


def test_a_model_added_outside_the_reading_order_is_still_documented() -> None:
    models = {"course_rosters": MODELS["course_rosters"], "brand_new_table": MODELS["sync_log"]}
    text = data_dictionary.render(models)
    assert "## Other tables" in text and "\n### brand_new_table\n" in text
    assert "course_student_edges" not in text  # tables the models do not have are not invented
