"""The task registry: the built-in table plus third-party tasks from entry points.

A third-party package registers a task in its ``pyproject.toml``::

    [project.entry-points."taskonomy.tasks"]
    my_task = "my_package.tasks:MY_TASK"

where ``MY_TASK`` is a :class:`~taskonomy.tasks.specs.TaskSpec`, or a ``(TaskSpec, family_class)``
pair when the task needs a LightningModule family of its own. A name that is already taken is an
error, so a plugin can never silently replace a built-in task.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from taskonomy.tasks.specs import BASELINES, BUILTIN_TASKS, FAMILIES, TaskSpec

ENTRY_POINT_GROUP = "taskonomy.tasks"


@dataclass(frozen=True)
class RegisteredTask:
    """A task in the registry: its spec, an optional custom family class, and its origin."""

    spec: TaskSpec
    family_class: Any = None
    origin: str = "builtin"

    @property
    def plugin(self) -> bool:
        """Whether a third-party package registered the task (not the built-in table)."""
        return self.origin != "builtin"


def _load_plugins() -> list[RegisteredTask]:
    found = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        obj = ep.load()
        dist = getattr(ep, "dist", None)  # the installed package that declares it
        package = f" of {dist.name} {dist.version}" if dist is not None else ""
        origin = f"{ep.value} (entry point {ep.name!r}{package})"
        if isinstance(obj, TaskSpec):
            if obj.family not in FAMILIES:
                raise ValueError(
                    f"entry point {ep.name!r}: task {obj.name!r} has family {obj.family!r}, "
                    f"which has no built-in class (built-in families: {', '.join(FAMILIES)}); "
                    "point the entry point to a (TaskSpec, family_class) pair to bring its class"
                )
            found.append(RegisteredTask(obj, None, origin))
        elif isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], TaskSpec):
            found.append(RegisteredTask(obj[0], obj[1], origin))
        else:
            raise TypeError(
                f"entry point {ep.name!r} in group {ENTRY_POINT_GROUP!r} must point to a TaskSpec "
                f"or a (TaskSpec, family_class) pair, got {type(obj).__name__}"
            )
    return found


@functools.cache
def _registry() -> dict[str, RegisteredTask]:
    registry: dict[str, RegisteredTask] = {}
    for item in [RegisteredTask(spec) for spec in BUILTIN_TASKS] + _load_plugins():
        name = item.spec.name
        if name in registry:
            raise ValueError(
                f"duplicate task name {name!r}: defined by {registry[name].origin} and by "
                f"{item.origin}; rename one of them"
            )
        if name in BASELINES:
            raise ValueError(f"task name {name!r} is reserved for a baseline; rename the task")
        registry[name] = item
    return registry


def reload_registry() -> None:
    """Forget the cached registry (after installing or removing a plugin in-process)."""
    _registry.cache_clear()


def task_names(*, targets_only: bool = False) -> list[str]:
    """Names of all registered tasks, built-in first, in table order."""
    return [n for n, item in _registry().items() if item.spec.target or not targets_only]


def get_spec(name: str) -> TaskSpec:
    """The spec of a task.

    Raises:
        ValueError: ``name`` is not a registered task; the message lists the valid names.
    """
    return get_registered(name).spec


def get_registered(name: str) -> RegisteredTask:
    """The registry entry of a task (spec, custom family class, origin)."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(registry)} (a plugin's "
                         "tasks are listed once its package is installed in this environment)")
    return registry[name]


def all_specs() -> list[TaskSpec]:
    """Specs of every registered task."""
    return [item.spec for item in _registry().values()]
