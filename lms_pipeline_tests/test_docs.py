"""The documentation says what the code does: the data dictionary is the one the pandera models generate, every
provider fact the code cites is in docs/providers.md, the README's asset graph is the one Dagster loads, and the README
stays short enough to read, with links that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

from lms_pipeline import data_dictionary
from lms_pipeline.schemas import MODELS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PROVIDERS = DOCS / "providers.md"
README_MAX_BYTES = 12_500
SECTION = "\N{SECTION SIGN}"
# A section number cited after another document's name (RFC 6750 §3.1, peers-and-user-pains.md §16) is that
# document's; any other is docs/providers.md's, named on the same line or at the top of the file.
CITATION = re.compile(SECTION + r"(\d+(?:\.\d+)*)")
OTHER_DOCUMENT = re.compile(r"(RFC \d+|[\w-]+\.md)(?:[^.;)]*?)$")


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


def cited_files() -> list[Path]:
    """Every file of the project that may cite a provider fact (this test's own patterns excepted)."""
    sources = [p for d in ("lms_pipeline", "lms_pipeline_tests") for p in (ROOT / d).rglob("*")
               if p.suffix in (".py", ".json") and p != Path(__file__).resolve()]  # fmt: skip
    return sorted([*sources, README, *DOCS.glob("*.md"), *(ROOT / "data").rglob("*.yaml")])


def provider_sections() -> set[str]:
    """Section numbers of docs/providers.md: headings such as ``## 9. Conformance`` and ``### 9.4 Unified.to``."""
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)*)\.? ", PROVIDERS.read_text(), flags=re.MULTILINE))


def test_every_provider_fact_the_code_cites_has_its_section_in_docs_providers() -> None:
    sections = provider_sections()
    assert {"1.4", "1.9", "2.8", "4.7", "5.5", "9.1", "9.4", "9.5"} <= sections
    cited: list[tuple[str, int, str]] = []
    for path in cited_files():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            assert "provider-apis" not in line, (
                f"{path.relative_to(ROOT)}:{number} cites provider-apis.md, which is not in the repository: "
                "cite docs/providers.md"
            )
            assert not re.search(r"providers\.md " + SECTION + r"[^\d]", line), (
                f"{path.relative_to(ROOT)}:{number}: cite a numbered section of docs/providers.md"
            )
            for match in CITATION.finditer(line):
                before = CITATION.sub("", line[max(0, match.start() - 60) : match.start()])
                other = OTHER_DOCUMENT.search(before)
                if other and other.group(1) != "providers.md":
                    continue
                cited.append((f"{path.relative_to(ROOT)}:{number}", match.group(1), line.strip()))
    assert len(cited) > 60, "the citations were not found: has the citation style changed?"
    missing = [f"{where}: {SECTION}{section} ({line})" for where, section, line in cited if section not in sections]
    assert not missing, "cited sections missing from docs/providers.md:\n" + "\n".join(missing)


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
