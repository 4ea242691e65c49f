"""The documentation says what the code does: the data dictionary is the one the pandera models generate, the README's
asset graph is the one Dagster loads, and the README stays short enough to read, with links that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

from lms_pipeline import data_dictionary
from lms_pipeline.schemas import MODELS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_BYTES = 12_500


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


def mermaid_edges(text: str) -> set[tuple[str, str]]:
    """(upstream, downstream) pairs of the first mermaid flowchart: ``a & b --> c -->|label| d`` lines."""
    block = re.search(r"```mermaid\n(.*?)```", text, flags=re.DOTALL)
    assert block, "no mermaid diagram in the README"
    edges: set[tuple[str, str]] = set()
    for line in block.group(1).splitlines()[1:]:
        steps = [[node.strip() for node in part.split("&")] for part in re.split(r"-->(?:\|[^|]*\|)?", line)]
        for upstream, downstream in zip(steps, steps[1:], strict=False):
            edges |= {(u, d) for u in upstream for d in downstream}
    return edges


def test_the_readme_asset_graph_is_the_one_dagster_loads() -> None:
    from lms_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    loaded = {
        (parent.to_user_string(), key.to_user_string())
        for key in graph.get_all_asset_keys()
        for parent in graph.get(key).parent_keys
    }
    drawn = mermaid_edges(README.read_text())
    assert drawn == loaded, f"README diagram: missing {sorted(loaded - drawn)}, not in Dagster {sorted(drawn - loaded)}"


def test_the_readme_stays_short() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes, over {README_MAX_BYTES}: move detail to docs/ and link to it"
    )


def anchors(page: Path) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_relative_link_in_the_readme_and_docs_leads_to_a_file_and_heading() -> None:
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            linked = (page.parent / target) if target else page
            assert linked.exists(), f"{page.relative_to(ROOT)} links to missing {target}"
            if anchor:
                assert anchor in anchors(linked), f"{page.relative_to(ROOT)} links to missing heading {target}#{anchor}"
