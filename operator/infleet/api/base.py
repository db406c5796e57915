"""Building blocks shared by the infleet API objects: model bases, metadata, conditions.

Every API model is a pydantic v2 model whose Python attributes are snake_case and whose YAML/JSON
names are camelCase (``populate_by_name`` lets Python code use either). The descriptions given
with ``Field(description=...)`` end up in the generated CRDs, so ``kubectl explain`` shows them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "infleet.io"
"""API group of every infleet kind."""
VERSION = "v1alpha1"
"""The one served (and stored) version."""
API_VERSION: Final = "infleet.io/v1alpha1"
"""The ``apiVersion`` every infleet manifest carries."""

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""RFC 1123 label: lowercase letters, digits and '-', starting and ending alphanumeric."""
DNS_1035_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""RFC 1035 label (what Service names need): like a DNS label but starting with a letter."""
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""RFC 1123 subdomain: dot-separated DNS labels."""

PATTERN_PHRASES: dict[str, str] = {
    DNS_LABEL_PATTERN: (
        "must be a DNS label: lowercase letters, digits and '-', starting and ending with a "
        "letter or digit"
    ),
    DNS_1035_LABEL_PATTERN: (
        "must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter "
        "and ending with a letter or digit"
    ),
    DNS_SUBDOMAIN_PATTERN: (
        "must be a DNS subdomain: lowercase letters, digits, '-' and '.', each dot-separated "
        "part starting and ending with a letter or digit"
    ),
}
"""Plain-language meaning of the patterns above, for error messages."""


class ApiModel(BaseModel):
    """Base of every infleet API model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """The object as Kubernetes would show it: camelCase, JSON types, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SpecModel(ApiModel):
    """Base of user-written parts (spec): unknown fields are errors, so typos are caught."""

    model_config = ConfigDict(extra="forbid")


class StatusModel(ApiModel):
    """Base of operator-written parts (status): unknown fields are ignored, so an older or newer
    operator's status still loads."""

    model_config = ConfigDict(extra="ignore")


class ConditionStatus(StrEnum):
    """Status of a condition, as in every Kubernetes condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """One aspect of an object's state (the standard Kubernetes condition shape)."""

    type: str = Field(description="Condition type, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        default="", description="One CamelCase word saying why the condition is in this state."
    )
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None,
        description="metadata.generation of the object that the condition was computed from.",
    )


class ObjectMeta(ApiModel):
    """The parts of Kubernetes object metadata that infleet reads. Other metadata fields
    (uid, resourceVersion, ownerReferences, ...) are accepted and kept as they are."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Object name; at most 63 characters because infleet uses it in label values.",
    )
    namespace: str | None = Field(
        default=None, max_length=63, pattern=DNS_LABEL_PATTERN, description="Namespace."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
    generation: int | None = Field(
        default=None, description="Generation set by the API server on spec changes."
    )


class NamespacedObjectMeta(ObjectMeta):
    """Metadata of a namespaced object: the namespace defaults to ``default`` as with kubectl,
    and the name must be a DNS-1035 label because it also names a Service."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_1035_LABEL_PATTERN,
        description="Object name; also the name of the model's Service, so a DNS-1035 label.",
    )
    namespace: str = Field(
        default="default", max_length=63, pattern=DNS_LABEL_PATTERN, description="Namespace."
    )
