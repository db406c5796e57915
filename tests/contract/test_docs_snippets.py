"""Every ```yaml block in README.md and docs/*.md is valid, one test per block (file:line).

infleet objects go through infleet's own manifest loader, other Kubernetes objects need
apiVersion, kind and metadata.name, and Helm values are checked against the chart's
values.schema.json (tests/doc_snippets.py has the rules). tests/e2e/test_kubectl_experience.py
also dry-runs every manifest against a real API server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from doc_snippets import (
    REPO,
    broken_links,
    fenced_blocks,
    markdown_files,
    merge_values,
    snippet_problems,
    values_problems,
    yaml_snippets,
)

SNIPPETS = yaml_snippets()


def test_the_docs_have_yaml_snippets() -> None:
    # Guards the parametrisation below against silently collecting nothing.
    files = {s.file for s in SNIPPETS}
    assert {"docs/pools.md", "docs/models.md"} <= files, files


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.where for s in SNIPPETS])
def test_yaml_snippet_is_valid(snippet: object) -> None:
    problems = snippet_problems(snippet.text, snippet.where)  # type: ignore[attr-defined]
    assert not problems, "\n".join(problems)


# --- the checker itself must fail on broken snippets ---------------------------------------

GOOD_MODEL = """\
apiVersion: infleet.io/v1alpha1
kind: ModelDeployment
metadata:
  name: chat
spec:
  model: org/chat
  slo: {timeToFirstTokenMs: 500}
  variants:
    - acceleratorType: nvidia-l4
      maxRequestsPerSecond: 2
"""


def test_a_valid_model_passes() -> None:
    assert snippet_problems(GOOD_MODEL, "x.md:1") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # An SLO with no target: the API's own rule.
        (
            GOOD_MODEL.replace("{timeToFirstTokenMs: 500}", "{percentile: 95}"),
            "set at least one of timeToFirstTokenMs and timePerOutputTokenMs",
        ),
        # A misspelt field is an error (spec models forbid unknown fields).
        (GOOD_MODEL.replace("maxRequestsPerSecond", "maxRequestPerSecond"), "maxRequestPerSecond"),
        # A wrong kind in infleet's group.
        (GOOD_MODEL.replace("kind: ModelDeployment", "kind: Model"), "unsupported kind 'Model'"),
        # A repeated key, which plain YAML loading would hide.
        (GOOD_MODEL.replace("  model: org/chat\n", "  model: a\n  model: b\n"), "duplicate key"),
        ("a: [1, 2\n", "invalid YAML"),
        ("\n", "empty YAML block"),
        # Other kinds: apiVersion, kind and metadata.name.
        ("apiVersion: v1\nkind: Namespace\nmetadata: {}\n", "metadata.name is missing"),
        ("kind: Namespace\nmetadata: {name: llm}\n", "apiVersion must be a non-empty string"),
        ("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Node}]\n", "items[0]"),
    ],
    ids=[
        "slo-without-target", "misspelt-field", "unknown-kind", "duplicate-key", "bad-yaml",
        "empty", "no-name", "no-apiversion", "list-item-no-name",
    ],
)  # fmt: skip
def test_broken_snippets_are_reported_with_their_place(text: str, expected: str) -> None:
    problems = snippet_problems(text, "docs/x.md:7")
    assert problems, f"no problem found in:\n{text}"
    assert all(p.startswith("docs/x.md:7: ") for p in problems), problems
    assert any(expected in p for p in problems), problems


SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "required": ["image"],
    "properties": {
        "image": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"repository": {"type": "string"}, "tag": {"type": "string"}},
        },
        "replicas": {"type": "integer", "minimum": 1},
    },
}
DEFAULTS = {"image": {"repository": "infleet", "tag": "0.1.0"}, "replicas": 1}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicas": 2}, []),
        ({"image": {"tag": "0.2.0"}}, []),  # merged over the defaults: repository stays
        ({"replicas": 0}, ["Helm values replicas: 0 is less than the minimum of 1"]),
        (
            {"image": {"tga": "x"}},
            ["Helm values image: Additional properties are not allowed ('tga' was unexpected)"],
        ),
        ({"image": None}, ["Helm values (top level): 'image' is a required property"]),
    ],
)
def test_helm_values_are_checked_after_merging_over_the_defaults(
    values: dict[str, object], expected: list[str]
) -> None:
    assert values_problems(values, SCHEMA, DEFAULTS) == expected


def test_values_snippet_without_a_chart_is_an_error(tmp_path: Path) -> None:
    problems = snippet_problems("replicas: 2\n", "docs/x.md:3", chart=tmp_path)
    assert len(problems) == 1
    assert "values.schema.json" in problems[0]


def test_merge_values_follows_helm() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": [1, 2], "e": 3}
    assert merge_values(base, {"a": {"b": 9}, "d": [3], "e": None}) == {
        "a": {"b": 9, "c": 2},
        "d": [3],
    }


def test_fenced_blocks_report_the_opening_line_and_strip_list_indentation() -> None:
    text = (
        "# T\n\n```yaml\na: 1\n```\n\n* item\n\n  ```yaml\n  b: 2\n  ```\n\n```console\n$ x\n```\n"
    )
    blocks = list(fenced_blocks(text, "f.md"))
    assert [(b.where, b.language, b.text) for b in blocks] == [
        ("f.md:3", "yaml", "a: 1\n"),
        ("f.md:9", "yaml", "b: 2\n"),
        ("f.md:13", "console", "$ x\n"),
    ]
    with pytest.raises(ValueError, match=r"f\.md:1: code block is never closed"):
        list(fenced_blocks("```yaml\na: 1\n", "f.md"))


# --- links: every docs page is reachable from the README and every relative link resolves ---


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    problems = broken_links(path)
    assert not problems, "\n".join(problems)


def test_readme_links_every_docs_page() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [
        p.name for p in sorted((REPO / "docs").glob("*.md")) if f"(docs/{p.name})" not in readme
    ]
    assert not missing, f"README.md's Documentation list lacks: {', '.join(missing)}"


def test_link_checker_finds_missing_files_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Infeasible models (`x`)\n")
    page = tmp_path / "docs" / "b.md"
    page.write_text(
        "[ok](a.md#infeasible-models-x) [web](https://example.com/x.md)\n"
        "[gone](c.md) [bad anchor](a.md#infeasible-models)\n"
        "```\n[in code](nowhere.md)\n```\n"
    )
    assert broken_links(page, repo=tmp_path) == [
        "docs/b.md: link c.md: c.md does not exist",
        "docs/b.md: link a.md#infeasible-models: no heading with anchor #infeasible-models in a.md",
    ]
