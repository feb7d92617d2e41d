"""Matching file columns to project columns, and the plan: what confirming an import would do."""


from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from metadata.models import Entity, EntityKind, Project, ProjectProperty, Property
from metadata.services.importing.reading import (
    ID,
    ID_ALIASES,
    KIND,
    KIND_ALIASES,
    LIST_LIMIT,
    PARENT,
    PARENT_ALIASES,
    SAMPLE_ROWS,
    SPECIAL_TARGETS,
    ImportRequestError,
    Table,
)
from metadata.services.matrix import events_as_matrix
from metadata.services.values import normalize_value, validation_message

# --- matching file columns to project columns ---------------------------------------------------------


def _norm(text: str) -> str:
    """Case-, space-, underscore- and punctuation-insensitive form of a header or label."""
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", str(text)).casefold())


def _fold(text: str) -> str:
    return " ".join(str(text).casefold().split())


@dataclass
class Context:
    """The project's kinds of rows and columns, loaded once per preview."""

    project: Project
    kinds: list[EntityKind]
    columns: list[ProjectProperty]
    properties: dict[str, Property]  # key -> property (a key may be a column of several kinds)
    by_kind: dict[int, set[str]]  # kind id -> keys of its columns

    @classmethod
    def load(cls, project: Project) -> Context:
        kinds = list(EntityKind.objects.filter(project=project).select_related("parent"))
        columns = list(
            ProjectProperty.objects.filter(project=project).select_related("property", "entity_kind")
        )
        by_kind: dict[int, set[str]] = defaultdict(set)
        properties = {}
        for column in columns:
            properties.setdefault(column.property.key, column.property)
            by_kind[column.entity_kind_id].add(column.property.key)
        return cls(project, kinds, columns, properties, by_kind)

    def targets(self) -> list[dict]:
        """Everything a file column can map to, for mapping menus."""
        kinds_of = defaultdict(list)
        for column in self.columns:
            kinds_of[column.property.key].append(column.entity_kind.label)
        return [
            *({"value": key, "label": label} for key, label in SPECIAL_TARGETS.items()),
            *(
                {
                    "value": key,
                    "label": f"{prop.label} ({key}) – {', '.join(dict.fromkeys(kinds_of[key]))}",
                }
                for key, prop in self.properties.items()
            ),
        ]

    def kind_named(self, text) -> EntityKind | None:
        wanted = _norm(text)
        return next((k for k in self.kinds if wanted in (_norm(k.key), _norm(k.label))), None)


def _label_names(prop: Property) -> set[str]:
    names = {_norm(prop.key), _norm(prop.label)}
    names.add(_norm(re.sub(r"\(.*?\)|\[.*?\]", "", prop.label)))
    if prop.unit:
        names.add(_norm(f"{prop.label} {prop.unit}"))
    return names - {""}


def auto_mapping(headers: list[str], context: Context) -> list[dict]:
    """For each file column: the target it maps to ("" for none) and how it was found.

    Passes, each taking targets not yet taken: exact key or `Label [key]` header, then names that
    differ only in case, spaces or punctuation (and the usual names of the id, kind and parent
    columns), then names of kinds of rows as the id (or parent) column, then close spellings.
    """
    keys = set(context.properties)
    found: list[dict] = [{"index": i, "header": h, "target": "", "how": ""} for i, h in enumerate(headers)]
    taken: set[str] = set()

    def assign(index: int, target: str, how: str) -> None:
        if found[index]["target"]:
            return
        if target in taken:
            if how != "similar":
                found[index]["same_as"] = target  # a second column for the same target
            return
        found[index].update(target=target, how=how)
        taken.add(target)

    for index, header in enumerate(headers):
        bracket = re.search(r"\[([a-z][a-z0-9_]*)\]\s*$", header)
        if bracket and bracket.group(1) in keys:
            assign(index, bracket.group(1), "key")
        elif bracket and f"@{bracket.group(1)}" in SPECIAL_TARGETS:
            assign(index, f"@{bracket.group(1)}", "key")
        elif header.strip() in keys:
            assign(index, header.strip(), "key")
    names: dict[str, str] = {}
    for key, prop in context.properties.items():
        for name in _label_names(prop):
            names.setdefault(name, key)
    for aliases, target in ((ID_ALIASES, ID), (KIND_ALIASES, KIND), (PARENT_ALIASES, PARENT)):
        for alias in aliases:
            names.setdefault(alias, target)
    for index, header in enumerate(headers):
        if _norm(header) in names:
            assign(index, names[_norm(header)], "name")
    # A column named after a kind of row ("Sample", "Patient ID") holds ids; of two such columns,
    # the one of the parent kind holds the parent ids.
    kind_columns = []
    for index, header in enumerate(headers):
        name = re.sub(r"(?:id|no|number|mnemonic)$", "", _norm(header)) or _norm(header)
        kind = context.kind_named(name)
        if kind is not None and not found[index]["target"]:
            kind_columns.append((index, kind))
    parents = {k.parent_id for _, k in kind_columns}
    id_kind = None
    for index, kind in sorted(kind_columns, key=lambda item: item[1].pk in parents):
        if ID not in taken:
            assign(index, ID, "kind")
            found[index]["kind"] = kind.key
            id_kind = kind
        elif id_kind is not None and kind.pk == id_kind.parent_id:
            assign(index, PARENT, "kind")
    choices = list(names)
    for index, header in enumerate(headers):
        wanted = _norm(header)
        if found[index]["target"] or len(wanted) < 3:
            continue
        for close in difflib.get_close_matches(wanted, choices, n=3, cutoff=0.8):
            if names[close] not in taken:
                assign(index, names[close], "similar")
                break
    return found


def resolve_mapping(headers: list[str], context: Context, override: dict | None) -> list[dict]:
    """The automatic mapping with the user's changes (`{column index or header: target or ""}`)."""
    mapping = auto_mapping(headers, context)
    if not override:
        return mapping
    allowed = set(SPECIAL_TARGETS) | set(context.properties)
    errors: dict[str, list[str]] = {}
    for name, target in override.items():
        target = (target or "").strip()
        if str(name).isascii() and str(name).isdigit():  # a file column by position …
            index = int(name)
        else:  # … or by its header
            index = next((i for i, h in enumerate(headers) if h == name), None)
        if index is None or index >= len(headers):
            errors[f"mapping.{name}"] = ["No such column in the file."]
        elif target and target not in allowed:
            errors[f"mapping.{name}"] = [f"{target!r} is not a column of this project."]
        elif target != mapping[index]["target"]:
            mapping[index].update(target=target, how="chosen")
    if errors:
        raise ImportRequestError("The column mapping names columns or targets that do not exist.", errors)
    seen: dict[str, int] = {}
    for item in mapping:
        if item["target"] and item["target"] in seen:
            first = headers[seen[item["target"]]] or f"column {seen[item['target']] + 1}"
            raise ImportRequestError(
                f"Two file columns map to {item['target']}: “{first}” and "
                f"“{item['header'] or 'column ' + str(item['index'] + 1)}”. Choose one.",
                {f"mapping.{item['index']}": ["Mapped twice."]},
            )
        if item["target"]:
            seen[item["target"]] = item["index"]
    return mapping


# --- the plan: what confirming would do -----------------------------------------------------------------


@dataclass
class Options:
    mapping: dict | None = None
    default_kind: str | None = None
    clear_empty: bool = False
    suggestions: frozenset[str] = frozenset()
    all_suggestions: bool = False


@dataclass
class PlannedRow:
    number: int
    kind: EntityKind
    entity: Entity | None = None  # None: a new row
    parent: Entity | None = None
    values: dict[str, object] = field(default_factory=dict)  # only cells that change
    unchanged: int = 0


@dataclass
class Plan:
    rows: list[PlannedRow]
    preview: dict


def _suggestion_id(key: str, value: str) -> str:
    return hashlib.sha256(f"{key}\n{value}".encode()).hexdigest()[:12]


class _Suggester:
    """Case and spelling variants of options and of values already used in the project."""

    def __init__(self, context: Context, used: dict[str, set]):
        self.context = context
        self.used = used
        self.cache: dict[tuple[str, str], tuple[str, str] | None] = {}

    def __call__(self, key: str, value) -> tuple[str, str] | None:
        if not isinstance(value, str):
            return None
        if (key, value) not in self.cache:
            self.cache[(key, value)] = self._find(self.context.properties[key], value)
        return self.cache[(key, value)]

    def _find(self, prop: Property, value: str) -> tuple[str, str] | None:
        options = [str(o.get("value")) for o in prop.options or [] if isinstance(o, dict)]
        used = [v for v in self.used.get(prop.key, ()) if validation_message(prop, v) is None]
        candidates = list(dict.fromkeys([*options, *sorted(used)]))
        if not candidates or value in candidates:
            return None
        folded = {}
        for candidate in candidates:
            folded.setdefault(_fold(candidate), candidate)
        if _fold(value) in folded:
            return folded[_fold(value)], "case"
        if not options:  # free text: only case variants of values in use, no guessing
            return None
        close = difflib.get_close_matches(_fold(value), list(folded)[:1000], n=1, cutoff=0.8)
        return (folded[close[0]], "spelling") if close else None


def build_plan(project: Project, table: Table, options: Options) -> Plan:
    """Everything confirming would do, and the preview that explains it; writes nothing."""
    context = Context.load(project)
    if not context.kinds:
        raise ImportRequestError("This project has no kinds of rows yet; add one before importing.")
    mapping = resolve_mapping(table.headers, context, options.mapping)
    index_of = {m["target"]: m["index"] for m in mapping if m["target"]}
    value_columns = [(m["index"], m["target"]) for m in mapping if m["target"] in context.properties]
    default_kind = _default_kind(context, mapping, options.default_kind)

    matrix = events_as_matrix(project)
    by_mnemonic = {e.mnemonic.upper(): e for e in matrix.entities}
    used: dict[str, set] = defaultdict(set)
    mapped_keys = {key for _, key in value_columns}
    for entity in matrix.entities:
        row = matrix.values.get(entity.pk)
        if row is None:
            continue
        for key in mapped_keys:
            if key in row and isinstance(row.get(key), str):
                used[key].add(row.get(key))
    suggest = _Suggester(context, used)
    normalized_cache: dict[tuple, object] = {}

    def normalized(key: str, raw):
        marker = (key, type(raw).__name__, raw)
        if marker not in normalized_cache:
            normalized_cache[marker] = normalize_value(context.properties[key], raw)
        return normalized_cache[marker]

    # First pass: rows, kinds, parents and normalised values; collect the suggestions.
    problems: list[dict] = []
    ignored_cells: Counter = Counter()
    drafts: list[tuple[PlannedRow, dict[str, tuple[int, object, object]]]] = []
    suggestions: dict[str, dict] = {}
    seen_rows: dict[str, int] = {}
    skipped = 0
    for number, cells in table.rows:
        try:
            planned = _resolve_row(context, by_mnemonic, index_of, default_kind, number, cells, problems)
        except _RowError as exc:
            problems.append({"row": number, "level": "error", "message": str(exc)})
            skipped += 1
            continue
        if planned.entity is not None:
            mnemonic = planned.entity.mnemonic
            if mnemonic in seen_rows:
                problems.append(
                    {
                        "row": number,
                        "level": "warning",
                        "message": f"{mnemonic} appears again (first in row {seen_rows[mnemonic]}); "
                        "where both give a value, this row's wins.",
                    }
                )
            seen_rows.setdefault(mnemonic, number)
        kind_keys = context.by_kind.get(planned.kind.pk, set())
        cells_of_row = {}
        for index, key in value_columns:
            raw = cells[index]
            if key not in kind_keys:
                if raw is not None:
                    ignored_cells[(planned.kind.label, key)] += 1
                continue
            value = normalized(key, raw)
            cells_of_row[key] = (index, raw, value)
            found = suggest(key, value)
            if found is not None:
                sid = _suggestion_id(key, value)
                entry = suggestions.setdefault(
                    sid,
                    {
                        "id": sid,
                        "property": key,
                        "label": context.properties[key].label,
                        "value": value,
                        "suggestion": found[0],
                        "reason": found[1],
                        "count": 0,
                    },
                )
                entry["count"] += 1
        drafts.append((planned, cells_of_row))

    # Second pass: apply accepted suggestions, validate, compare with the stored values.
    accepted = set(suggestions) if options.all_suggestions else set(options.suggestions) & set(suggestions)
    replace = {
        (s["property"], s["value"]): s["suggestion"] for s in suggestions.values() if s["id"] in accepted
    }
    invalid: list[dict] = []
    invalid_total = changed = unchanged = cleared = 0
    rows: list[PlannedRow] = []
    for planned, cells_of_row in drafts:
        stored = matrix.values.get(planned.entity.pk) if planned.entity is not None else None
        for key, (index, raw, value) in cells_of_row.items():
            prop = context.properties[key]
            if isinstance(value, str) and (key, value) in replace:
                value = normalize_value(prop, replace[(key, value)])
            current = stored.get(key) if stored is not None and key in stored else None
            if value is None:
                if options.clear_empty and current is not None:
                    planned.values[key] = None
                    cleared += 1
                continue
            message = validation_message(prop, value)
            if message:
                invalid_total += 1
                if len(invalid) < LIST_LIMIT:
                    invalid.append(
                        {
                            "row": planned.number,
                            "entity": planned.entity.mnemonic if planned.entity else None,
                            "column": table.headers[index],
                            "property": key,
                            "value": raw if isinstance(raw, (str, int, float, bool)) else str(raw),
                            "message": message,
                        }
                    )
            if current is not None and current == value and type(current) is type(value):
                planned.unchanged += 1
            else:
                planned.values[key] = value
        changed += len(planned.values)
        unchanged += planned.unchanged
        rows.append(planned)

    for m in mapping:
        if not m["target"] and m.get("same_as"):
            problems.append(
                {
                    "row": None,
                    "level": "warning",
                    "message": f"Column “{m['header']}” also matches {_target_label(context, m['same_as'])}, "
                    "which an earlier column fills; it is ignored unless you map it.",
                }
            )
    for (kind_label, key), count in sorted(ignored_cells.items()):
        problems.append(
            {
                "row": None,
                "level": "warning",
                "message": f"{kind_label} rows have no column {key!r}: {count} value(s) ignored.",
            }
        )
    new_rows = [r for r in rows if r.entity is None]
    updated = [r for r in rows if r.entity is not None and r.values]
    preview = {
        "columns": [{**m, "target_label": _target_label(context, m["target"])} for m in mapping],
        "targets": context.targets(),
        "unknown_columns": [
            m["header"] or f"(column {m['index'] + 1}, no name)"
            for m in mapping
            if not m["target"] and (m["header"] or any(c[m["index"]] is not None for _, c in table.rows))
        ],
        "missing_columns": [
            {"key": key, "label": prop.label}
            for key, prop in context.properties.items()
            if key not in mapped_keys
        ],
        "kinds": [{"key": k.key, "label": k.label} for k in context.kinds],
        "options": {
            "default_kind": default_kind.key,
            "clear_empty": options.clear_empty,
            "mapping": {str(m["index"]): m["target"] for m in mapping},
            "suggestions": sorted(accepted),
        },
        "counts": {
            "rows": len(table.rows),
            "empty_rows": table.empty_rows,
            "new_rows": len(new_rows),
            "updated_rows": len(updated),
            "unchanged_rows": len(rows) - len(new_rows) - len(updated),
            "skipped_rows": skipped,
            "changed_cells": changed,
            "unchanged_cells": unchanged,
            "cleared_cells": cleared,
            "invalid_cells": invalid_total,
            "ignored_cells": sum(ignored_cells.values()),
        },
        "suggestions": [
            {**s, "accepted": s["id"] in accepted}
            for s in sorted(suggestions.values(), key=lambda s: (s["property"], str(s["value"])))
        ][:LIST_LIMIT],
        "invalid_cells": invalid,
        "problems": problems[:LIST_LIMIT],
        "problems_total": len(problems),
        "rows": [
            {
                "row": r.number,
                "entity": r.entity.mnemonic if r.entity else None,
                "kind": r.kind.key,
                "parent": r.parent.mnemonic if r.parent else None,
                "action": "new" if r.entity is None else ("update" if r.values else "unchanged"),
                "changes": {k: v for k, v in r.values.items()},
            }
            for r in rows[:SAMPLE_ROWS]
        ],
        "notes": table.notes,
    }
    return Plan(rows=rows, preview=preview)


class _RowError(Exception):
    pass


def _resolve_row(context, by_mnemonic, index_of, default_kind, number, cells, problems) -> PlannedRow:
    def cell(target):
        return cells[index_of[target]] if target in index_of else None

    raw_id, raw_kind, raw_parent = cell(ID), cell(KIND), cell(PARENT)
    kind = None
    if raw_kind is not None:
        kind = context.kind_named(raw_kind)
        if kind is None:
            names = ", ".join(k.label for k in context.kinds)
            raise _RowError(f"Unknown kind of row {raw_kind!r}; this project has: {names}.")
    parent = None
    if raw_parent is not None:
        parent = by_mnemonic.get(str(raw_parent).strip().upper())
        if parent is None:
            raise _RowError(f"No row {raw_parent!r} in this project to be the parent.")
    if raw_id is not None:
        entity = by_mnemonic.get(str(raw_id).strip().upper())
        if entity is None:
            raise _RowError(
                f"No row {raw_id!r} in this project. Leave the id empty to create a new row, "
                "or map this column to another property."
            )
        if kind is not None and kind.pk != entity.kind_id:
            problems.append(
                {
                    "row": number,
                    "level": "warning",
                    "message": f"{entity.mnemonic} is a {entity.kind.label.lower()} row; "
                    "the kind of an existing row is not changed.",
                }
            )
        if parent is not None and parent.pk != entity.parent_id:
            problems.append(
                {
                    "row": number,
                    "level": "warning",
                    "message": f"The parent of existing row {entity.mnemonic} is not changed by an import.",
                }
            )
        return PlannedRow(number=number, kind=entity.kind, entity=entity, parent=None)
    kind = kind or default_kind
    if parent is not None:
        if kind.parent_id is None:
            raise _RowError(f"{kind.label} rows have no parent row.")
        if parent.kind_id != kind.parent_id:
            raise _RowError(
                f"A {kind.label.lower()} belongs to a {kind.parent.label.lower()}; "
                f"{parent.mnemonic} is a {parent.kind.label.lower()}."
            )
    return PlannedRow(number=number, kind=kind, parent=parent)


def _default_kind(context: Context, mapping: list[dict], wanted: str | None) -> EntityKind:
    """The kind of new rows without a kind column: the chosen one, the one named by the id column,
    or the kind with most of the file's columns (the later kind, e.g. sample, on a tie)."""
    if wanted:
        kind = next((k for k in context.kinds if k.key == wanted), None)
        if kind is None:
            raise ImportRequestError(
                f"No kind of row {wanted!r} in this project.", {"default_kind": ["No such kind of row."]}
            )
        return kind
    named = next((m.get("kind") for m in mapping if m["target"] == ID and m.get("kind")), None)
    if named:
        return next(k for k in context.kinds if k.key == named)
    keys = {m["target"] for m in mapping}
    return max(
        enumerate(context.kinds),
        key=lambda item: (len(context.by_kind.get(item[1].pk, set()) & keys), item[0]),
    )[1]


def _target_label(context: Context, target: str) -> str:
    if not target:
        return "(ignored)"
    if target in SPECIAL_TARGETS:
        return SPECIAL_TARGETS[target]
    return f"{context.properties[target].label} ({target})"
