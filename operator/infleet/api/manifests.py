"""Load AcceleratorPool and ModelDeployment manifests from YAML files, reporting every problem.

Files or directories (``*.yaml``/``*.yml``, recursively, in sorted order); multi-document YAML;
``kind: List`` with ``items``. Nothing stops at the first problem: each document is validated on
its own and every error of every document is returned, with the file, the object's kind and
name, the camelCase field path and a plain message, e.g.::

    models.yaml: ModelDeployment chat/llama: spec.targetUtilization: must be > 0 and <= 1, got 1.5

Objects with errors are left out of the result; the caller decides whether to go on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from infleet.api.base import API_VERSION
from infleet.api.errors import describe_validation_error, describe_value
from infleet.api.model_deployment import ModelDeployment
from infleet.api.pool import AcceleratorPool

KINDS: dict[str, type[AcceleratorPool] | type[ModelDeployment]] = {
    "AcceleratorPool": AcceleratorPool,
    "ModelDeployment": ModelDeployment,
}
"""The kinds a manifest may hold (all ``infleet.io/v1alpha1``)."""

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class ManifestError:
    """One problem in one manifest file."""

    file: str
    """The file, relative to the working directory when it is below it."""
    message: str
    kind: str | None = None
    """The document's kind, when it has one."""
    name: str | None = None
    """``name`` (pools) or ``namespace/name`` (models), when the document has a name."""
    path: str = ""
    """Dotted camelCase field path, e.g. ``spec.variants[1].profile``; empty for the whole
    document."""
    line: int | None = None
    """1-based line, for YAML syntax errors and documents without a name."""
    column: int | None = None
    """1-based column, for YAML syntax errors."""
    document: int | None = None
    """1-based index of the YAML document in the file (items of a List are ``items[i]``)."""
    item: int | None = None
    """0-based index in a ``kind: List`` document's items."""

    def _where(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def _subject(self) -> str | None:
        if self.kind and self.name:
            return f"{self.kind} {self.name}"
        label = f"document {self.document}" if self.document is not None else None
        if self.item is not None:
            label = f"{label}, items[{self.item}]" if label else f"items[{self.item}]"
        if self.kind:
            return f"{self.kind} ({label})" if label else self.kind
        return label

    def __str__(self) -> str:
        parts = [self._where()]
        subject = self._subject()
        if subject:
            parts.append(subject)
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


@dataclass
class LoadedManifests:
    """What the files held: valid objects, and every problem found."""

    pools: list[AcceleratorPool] = field(default_factory=list)
    models: list[ModelDeployment] = field(default_factory=list)
    errors: list[ManifestError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.errors


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _Loader(yaml.SafeLoader):
    """A safe loader that records duplicate mapping keys instead of silently keeping the last."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[tuple[int, int, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.value in seen:
                mark = key_node.start_mark
                self.duplicate_keys.append((mark.line + 1, mark.column + 1, key_node.value))
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class _Document:
    index: int
    line: int
    body: Any


def _parse(text: str, file: str, errors: list[ManifestError]) -> list[_Document]:
    """Documents of one YAML stream; on a syntax error, the documents before it."""
    documents: list[_Document] = []
    loader = _Loader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            index += 1
            if node is None:
                continue
            body = loader.construct_document(node)
            documents.append(_Document(index, node.start_mark.line + 1, body))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "cannot parse"
        if exc.context:
            message += f" ({exc.context}"
            if exc.context_mark is not None and exc.context_mark is not mark:
                cm = exc.context_mark
                message += f" started at line {cm.line + 1}, column {cm.column + 1}"
            message += ")"
        errors.append(
            ManifestError(
                file=file,
                message=f"invalid YAML: {message}",
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            )
        )
    except yaml.YAMLError as exc:
        errors.append(ManifestError(file=file, message=f"invalid YAML: {exc}"))
    finally:
        loader.dispose()
    for line, column, key in loader.duplicate_keys:
        errors.append(
            ManifestError(
                file=file,
                message=f"duplicate key {key!r} in a mapping (YAML would keep only the last)",
                line=line,
                column=column,
            )
        )
    return documents


def _identity(body: dict[str, Any], kind: str | None) -> str | None:
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        return None
    name: str = metadata["name"]
    if kind == "ModelDeployment":
        namespace = metadata.get("namespace")
        return f"{namespace if isinstance(namespace, str) else 'default'}/{name}"
    return name


def _check_document(body: Any, base: ManifestError, out: LoadedManifests) -> Iterator[BaseModel]:
    """Validate one document (or each item of a List); yield valid objects, record errors."""
    if not isinstance(body, dict):
        out.errors.append(
            _with(
                base,
                message="expected a mapping with apiVersion, kind, metadata and spec, got "
                + describe_value(body),
            )
        )
        return
    kind = body.get("kind")
    if kind == "List":
        items = body.get("items")
        if not isinstance(items, list):
            out.errors.append(
                _with(base, kind="List", path="items", message="must be a list of objects")
            )
            return
        for i, item in enumerate(items):
            yield from _check_document(item, _with(base, item=i, line=None), out)
        return
    if not isinstance(kind, str):
        message = "required field is missing" if kind is None else "must be a string"
        out.errors.append(_with(base, path="kind", message=message))
        return
    name = _identity(body, kind)
    base = _with(base, kind=kind, name=name)
    model = KINDS.get(kind)
    if model is None:
        out.errors.append(
            _with(
                base,
                path="kind",
                message=f"unsupported kind {kind!r}: only {' and '.join(KINDS)} "
                f"({API_VERSION}) are accepted",
            )
        )
        return
    api_version = body.get("apiVersion")
    if api_version != API_VERSION:
        message = (
            "required field is missing"
            if api_version is None
            else f"unsupported apiVersion {api_version!r} for {kind}: expected {API_VERSION}"
        )
        out.errors.append(_with(base, path="apiVersion", message=message))
        return
    try:
        yield model.model_validate(body)
    except ValidationError as exc:
        for problem in describe_validation_error(exc, model):
            out.errors.append(_with(base, path=problem.path, message=problem.message))


def _with(base: ManifestError, **changes: Any) -> ManifestError:
    fields = {**base.__dict__, **changes}
    if fields.get("name"):
        fields["line"] = None  # a named object needs no line to be found
    return ManifestError(**fields)


def parse_manifests(text: str, file: str) -> LoadedManifests:
    """Validate the YAML ``text`` of one file, named ``file`` in errors."""
    out = LoadedManifests()
    for doc in _parse(text, file, out.errors):
        base = ManifestError(file=file, message="", document=doc.index, line=doc.line)
        for obj in _check_document(doc.body, base, out):
            if isinstance(obj, AcceleratorPool):
                out.pools.append(obj)
            elif isinstance(obj, ModelDeployment):
                out.models.append(obj)
    return out


def _files(paths: Sequence[str | Path], errors: list[ManifestError]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in YAML_SUFFIXES
            )
            if not found:
                errors.append(
                    ManifestError(
                        file=display_path(path), message="directory holds no .yaml or .yml files"
                    )
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(
                ManifestError(file=display_path(path), message="no such file or directory")
            )
    # A file named twice (directly and through its directory) is read once.
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def _object_name(obj: AcceleratorPool | ModelDeployment) -> str:
    if isinstance(obj, ModelDeployment):
        return f"{obj.metadata.namespace}/{obj.metadata.name}"
    return obj.metadata.name


class _Merger:
    """Collects the objects of several files, refusing a second object with the same identity."""

    def __init__(self) -> None:
        self.result = LoadedManifests()
        self._seen: dict[tuple[str, str], str] = {}

    def add(self, file: str, loaded: LoadedManifests) -> None:
        self.result.errors.extend(loaded.errors)
        objects: list[AcceleratorPool | ModelDeployment] = [*loaded.pools, *loaded.models]
        for obj in objects:
            name = _object_name(obj)
            key = (obj.kind, name)
            if key in self._seen:
                self.result.errors.append(
                    ManifestError(
                        file=file,
                        kind=obj.kind,
                        name=name,
                        path="metadata.name",
                        message=f"duplicate {obj.kind} {name}: already defined in "
                        f"{self._seen[key]}",
                    )
                )
                continue
            self._seen[key] = file
            if isinstance(obj, AcceleratorPool):
                self.result.pools.append(obj)
            else:
                self.result.models.append(obj)


def load_manifests(paths: Sequence[str | Path]) -> LoadedManifests:
    """Load every AcceleratorPool and ModelDeployment under ``paths`` (files or directories).

    Returns the valid objects and every problem found: unreadable files, YAML syntax errors
    (with line and column), unknown kinds or apiVersions, schema and rule violations (with the
    field path), and objects defined twice (same kind, namespace and name).
    """
    merger = _Merger()
    for path in _files(paths, merger.result.errors):
        file = display_path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            merger.result.errors.append(ManifestError(file=file, message=f"cannot read: {reason}"))
            continue
        merger.add(file, parse_manifests(text, file))
    return merger.result


__all__ = [
    "KINDS",
    "LoadedManifests",
    "ManifestError",
    "display_path",
    "load_manifests",
    "parse_manifests",
]
