"""Models of the metadata app, one module per theme."""

from .cache import MatrixCache, RowSnapshot, RowState
from .entities import Entity, EntityKind
from .events import Event, EventKind
from .projects import JoinRequest, JoinRequestState, Membership, Project, ProjectRole
from .properties import ProjectProperty, Property, PropertyType, Template, TemplateProperty

__all__ = [
    "Entity",
    "EntityKind",
    "Event",
    "EventKind",
    "JoinRequest",
    "JoinRequestState",
    "MatrixCache",
    "Membership",
    "Project",
    "ProjectProperty",
    "ProjectRole",
    "Property",
    "PropertyType",
    "RowSnapshot",
    "RowState",
    "Template",
    "TemplateProperty",
]
