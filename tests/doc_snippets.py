"""The ```yaml blocks of README.md and docs/*.md, and what makes each one valid.

Shared by tests/contract/test_docs_snippets.py (offline validation) and
tests/e2e/test_kubectl_experience.py (server-side dry run). A plain module, not a test file:
tests/ is on sys.path because pytest puts the directory of the rootdir's conftest.py there.

Every YAML document in a block is one of:

* an ``infleet.io`` object: loaded through infleet's own manifest loader
  (``infleet.api.manifests.parse_manifests``), so it must be a valid AcceleratorPool or
  ModelDeployment;
* another Kubernetes object (``apiVersion`` and ``kind``): it must carry ``metadata.name``
  (a ``kind: List`` checks each item);
* anything else is Helm values for charts/infleet: merged over the chart's values.yaml as Helm
  merges them, then validated against values.schema.json.

Blocks are whole documents, never fragments of one; a fragment would be read as Helm values and
fail the schema. Console output and other languages are not checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "infleet"
INFLEET_GROUP = "infleet.io"

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<info>[^\s`]*)")


@dataclass(frozen=True)
class Snippet:
    """One fenced code block of a Markdown file."""

    file: str
    """Path relative to the repository, e.g. ``docs/pools.md``."""
    line: int
    """1-based line of the opening fence."""
    language: str
    text: str

    @property
    def where(self) -> str:
        """``file:line``, the test id and the prefix of every error."""
        return f"{self.file}:{self.line}"


def markdown_files(repo: Path = REPO) -> list[Path]:
    """README.md and every docs/*.md, in a fixed order."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def fenced_blocks(text: str, file: str) -> Iterator[Snippet]:
    """Every fenced block of a Markdown text (indented fences in lists included)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line)
            i += 1
        if i >= len(lines):
            raise ValueError(f"{file}:{start + 1}: code block is never closed")
        yield Snippet(file, start + 1, match["info"].lower(), "\n".join(body) + "\n")
        i += 1


def yaml_snippets(repo: Path = REPO) -> list[Snippet]:
    """Every ```yaml (or ```yml) block of README.md and docs/*.md."""
    found: list[Snippet] = []
    for path in markdown_files(repo):
        rel = str(path.relative_to(repo))
        found.extend(
            s for s in fenced_blocks(path.read_text(encoding="utf-8"), rel)
            if s.language in ("yaml", "yml")
        )  # fmt: skip
    return found


class _StrictLoader(yaml.SafeLoader):
    """Safe loading that refuses a repeated mapping key (YAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_documents(text: str) -> list[Any]:
    """The YAML documents of a block (empty documents dropped); raises on bad YAML."""
    return [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]


def is_manifest(doc: Any) -> bool:
    """Whether a document is a Kubernetes object (as opposed to Helm values)."""
    return isinstance(doc, dict) and ("apiVersion" in doc or "kind" in doc)


def is_infleet(doc: Mapping[str, Any]) -> bool:
    """Whether a manifest belongs to infleet's API group."""
    return str(doc.get("apiVersion", "")).split("/")[0] == INFLEET_GROUP


def _kubernetes_problems(doc: Mapping[str, Any], label: str) -> list[str]:
    problems = [
        f"{label}: {key} must be a non-empty string"
        for key in ("apiVersion", "kind")
        if not isinstance(doc.get(key), str) or not doc.get(key)
    ]
    if doc.get("kind") == "List":
        items = doc.get("items")
        if not isinstance(items, list) or not items:
            return [*problems, f"{label}: a List needs a non-empty items list"]
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                problems.append(f"{label}: items[{n}] must be an object")
            else:
                problems.extend(_kubernetes_problems(item, f"{label} items[{n}]"))
        return problems
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        problems.append(f"{label}: metadata.name is missing")
    return problems


def merge_values(base: Any, override: Any) -> Any:
    """Helm's merge of user values over the chart's: maps merge key by key, null deletes a
    key, anything else replaces."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_values(base.get(key), value)
    return merged


def values_problems(values: Any, schema: Mapping[str, Any], defaults: Any) -> list[str]:
    """Schema violations of ``values`` merged over the chart's ``defaults``."""
    import jsonschema

    merged = merge_values(defaults or {}, values)
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft7Validator)
    validator = validator_class(schema)
    problems = []
    for error in sorted(validator.iter_errors(merged), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        problems.append(f"Helm values {path}: {error.message}")
    return problems


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def chart_schema(chart: Path = CHART) -> tuple[dict[str, Any], Any]:
    """The chart's values.schema.json and values.yaml."""
    schema_file, values_file = chart / "values.schema.json", chart / "values.yaml"
    if not schema_file.is_file() or not values_file.is_file():
        raise FileNotFoundError(
            f"Helm values need {_shown(schema_file)} and {_shown(values_file)} to be validated "
            "against"
        )
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    return schema, yaml.safe_load(values_file.read_text(encoding="utf-8"))


def snippet_problems(text: str, where: str, chart: Path = CHART) -> list[str]:
    """Everything wrong with one ```yaml block, each problem prefixed with ``where``."""
    from infleet.api.manifests import parse_manifests

    try:
        documents = load_documents(text)
    except yaml.YAMLError as exc:
        return [f"{where}: invalid YAML: {exc}"]
    if not documents:
        return [f"{where}: empty YAML block"]
    problems: list[str] = []
    for n, doc in enumerate(documents, start=1):
        label = f"{where}: document {n}"
        if is_manifest(doc) and is_infleet(doc):
            loaded = parse_manifests(yaml.safe_dump(doc, sort_keys=False), where)
            problems.extend(f"{label}: {error}" for error in loaded.errors)
        elif is_manifest(doc):
            problems.extend(_kubernetes_problems(doc, label))
        else:
            try:
                schema, defaults = chart_schema(chart)
            except FileNotFoundError as exc:
                problems.append(f"{label}: {exc}")
                continue
            problems.extend(f"{label}: {p}" for p in values_problems(doc, schema, defaults))
    return problems


def manifests(snippet: Snippet) -> list[dict[str, Any]]:
    """The Kubernetes objects of a block (Helm values left out)."""
    return [d for d in load_documents(snippet.text) if is_manifest(d)]


_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lowercase, punctuation dropped, spaces to
    hyphens (``## Infeasible models (`x`)`` -> ``infeasible-models-x``)."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Anchors of every heading outside code blocks."""
    found: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.add(heading_anchor(line.lstrip("#")))
    return found


def broken_links(path: Path, repo: Path = REPO) -> list[str]:
    """Relative links of a Markdown file whose file or heading anchor does not exist."""
    text = path.read_text(encoding="utf-8")
    # Code blocks hold shell and YAML, not links.
    prose = "\n".join(
        line for line, code in zip(text.splitlines(), _code_mask(text), strict=True) if not code
    )
    problems = []
    for match in _LINK.finditer(prose):
        target = match["target"]
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto: ...
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(repo)}: link {target}"
        if not linked.exists():
            problems.append(f"{where}: {file_part} does not exist")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            problems.append(f"{where}: no heading with anchor #{anchor} in {file_part or 'it'}")
    return problems


def _code_mask(text: str) -> list[bool]:
    mask, in_code = [], False
    for line in text.splitlines():
        fence = _FENCE.match(line) is not None
        mask.append(in_code or fence)
        if fence:
            in_code = not in_code
    return mask
