"""Series definitions from a model's `topology` (SPEC §2): bindings and synthesized series.

`TopologyBuilder` extends `SeriesBuilder` (the nodes list) with the topology: it resolves each
node's semantic fields (a series id, `file:<path>`, `telemetry`, `self` for queueDepth) into
series ids, synthesizes a retry echo (CONV of failures with the retry kernel), the capped demands
of shared-capacity constraints and the queues of queue-like nodes (snake-case names:
`<node>_queue`, `<node>_outflow`, `<node>_overflow`), and points WIP overflow at target queues.
"""

from __future__ import annotations

import re
from dataclasses import replace

from engine_live.expressions.syntax import Call, ListLit, Ref
from engine_live.model.checking import EVAL_KIND
from engine_live.model.node_builder import SeriesBuilder
from engine_live.model.series_defs import CapDef, ConstDef, ExprDef, QueueDef, TelemetryDef, TopoBinding
from engine_live.model.topology_specs import TopoNodeSpec

QUEUE_KINDS = ("serviceWithBuffer", "queue", "dlq")
DEFAULT_RETRY_KERNEL = (0.0, 0.6, 0.3, 0.1)


def snake_case(name: str) -> str:
    """`HTTPService` → `http_service`, `QueueA` → `queue_a`, `Service2A` → `service2_a`."""
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    snake = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", snake)
    snake = re.sub(r"[^A-Za-z0-9]", "_", snake)
    return re.sub(r"_+", "_", snake).lower()


def eval_kind(node: TopoNodeSpec) -> str:
    """The kind whose metric and colour rules a node follows: `nodeRole: sink` makes a sink (as
    upstream's categories do), upstream-only kinds follow `EVAL_KIND`, the rest are themselves."""
    if str(node.labels.get("nodeRole", "")).lower() == "sink":
        return "sink"
    return EVAL_KIND.get(node.kind, node.kind)


class TopologyBuilder(SeriesBuilder):
    """The nodes list's definitions plus everything the topology adds."""

    def resolve_field(self, node: TopoNodeSpec, field_name: str, value: str, telemetry: set[str]) -> str | None:
        """The series id of one semantic field (None: synthesized later, or an error)."""
        where = f"topology node '{node.id}'"
        if value == "telemetry":
            series_id = f"{node.id}.{field_name}"
            self.add(TelemetryDef(series_id), where)
            self.hidden.add(series_id)
            telemetry.add(field_name)
            return series_id
        if value.startswith("file:"):
            series_id = f"{node.id}.{field_name}"
            values = self.file_values(f"{where}: semantics.{field_name}", value, node.id)
            self.add(ConstDef(series_id, values, "file"), where)
            self.hidden.add(series_id)
            return series_id
        if self.exists(value):
            if isinstance(self.defs.get(self.owner[value]), TelemetryDef):
                telemetry.add(field_name)
            return value
        if field_name == "queueDepth" or field_name == "retryEcho":
            return None  # synthesized below
        self.err(where, f"semantics.{field_name}: unknown series '{value}'")
        return None

    def topology(self) -> list[TopoBinding]:
        """Resolve, synthesize and bind every topology node, in document order."""
        fields_of: dict[str, dict[str, str]] = {}
        telemetry_of: dict[str, set[str]] = {}
        parallelism_of: dict[str, float | str | None] = {}
        for node in self.doc.topo_nodes:
            fields, telemetry, parallelism = self.resolve_fields(node)
            fields_of[node.id], telemetry_of[node.id], parallelism_of[node.id] = fields, telemetry, parallelism
            self.retry_echo(node, fields)
        capped = self.constraints(fields_of)
        queue_of = self.queues(fields_of, capped)
        self.overflow_targets(queue_of)
        bindings = []
        for node in self.doc.topo_nodes:
            sla = node.semantics.get("slaMin")
            bindings.append(
                TopoBinding(
                    node.id,
                    eval_kind(node),
                    fields_of[node.id],
                    parallelism_of[node.id],
                    float(sla) if sla is not None else None,
                    frozenset(telemetry_of[node.id]),
                    node.ui if isinstance(node.ui, dict) else None,
                    node.constraints[0] if node.constraints else None,
                    dict(node.aliases),
                    dict(node.labels),
                    node.kind if node.kind != eval_kind(node) else None,
                )
            )
        return bindings

    def resolve_fields(self, node: TopoNodeSpec) -> tuple[dict[str, str], set[str], float | str | None]:
        """(field → series id, the fields fed by telemetry, parallelism as a number or series id)."""
        fields: dict[str, str] = {}
        telemetry: set[str] = set()
        for field_name, value in node.semantics.items():
            if field_name in ("slaMin", "parallelism", "retryKernel") or not isinstance(value, str):
                continue
            if field_name == "queueDepth" and value == "self":
                continue
            series_id = self.resolve_field(node, field_name, value, telemetry)
            if series_id is not None:
                fields[field_name] = series_id
        parallelism = node.semantics.get("parallelism")
        if isinstance(parallelism, str):
            parallelism = self.resolve_field(node, "parallelism", parallelism, telemetry)
        return fields, telemetry, parallelism

    def queues(self, fields_of: dict[str, dict[str, str]], capped: dict[str, str]) -> dict[str, str]:
        """Synthesize the queue of every queue-like node without a queueDepth series; node → queue id."""
        queue_of: dict[str, str] = {}
        for node in self.doc.topo_nodes:
            fields = fields_of[node.id]
            depth = node.semantics.get("queueDepth")
            wants = node.kind in QUEUE_KINDS and (depth is None or depth == "self" or "queueDepth" not in fields)
            if depth == "self":
                wants = True
            if not wants:
                continue
            snake = snake_case(node.id)
            queue_id = depth if isinstance(depth, str) and depth != "self" else f"{snake}_queue"
            where = f"topology node '{node.id}'"
            if self.exists(queue_id) or self.exists(f"{snake}_outflow") or self.exists(f"{snake}_overflow"):
                self.err(where, f"synthesized queue '{queue_id}' collides with an existing series")
                continue
            inflow = capped.get(node.id, fields.get("arrivals"))
            outflow = fields.get("served", fields.get("capacity"))
            initial = node.initial_queue if node.initial_queue is not None else 0.0
            self.add(
                QueueDef(
                    queue_id,
                    inflow,
                    outflow,
                    fields.get("errors"),
                    initial,
                    node.wip_limit,
                    node.wip_limit_series,
                    node.wip_overflow,
                    node.dispatch,
                    f"{snake}_outflow",
                    f"{snake}_overflow",
                ),
                where,
            )
            fields["queueDepth"] = queue_id
            queue_of[node.id] = queue_id
        return queue_of

    def retry_echo(self, node: TopoNodeSpec, fields: dict[str, str]) -> None:
        """Synthesize `semantics.retryEcho`: CONV(failures or errors, retry kernel scaled to ≤ 1)."""
        name = node.semantics.get("retryEcho")
        if not isinstance(name, str) or "retryEcho" in fields:
            return
        where = f"topology node '{node.id}'"
        source = fields.get("failures", fields.get("errors"))
        if source is None:
            self.err(where, "semantics.retryEcho: needs failures or errors to synthesize a retry echo")
            return
        kernel = [float(k) for k in (node.semantics.get("retryKernel") or DEFAULT_RETRY_KERNEL)][:32]
        total = 0.0
        for k in kernel:
            total += k
        if total > 1.0:
            kernel = [k / total for k in kernel]
        self.add(ExprDef(name, Call("CONV", (Ref(source), ListLit(tuple(kernel)))), None, "retryEcho"), where)
        fields["retryEcho"] = name

    def constraints(self, fields_of: dict[str, dict[str, str]]) -> dict[str, str]:
        """One CapDef per constraint over its members' arrivals; node → its capped arrivals series."""
        members: dict[str, list[str]] = {constraint.id: [] for constraint in self.doc.constraints}
        for node in self.doc.topo_nodes:
            for constraint_id in node.constraints:
                if constraint_id not in members:
                    self.err(f"topology node '{node.id}'", f"constraints: unknown constraint '{constraint_id}'")
                else:
                    members[constraint_id].append(node.id)
        capped: dict[str, str] = {}
        for constraint in self.doc.constraints:
            where = f"constraint '{constraint.id}'"
            if not constraint.served or not self.exists(constraint.served):
                self.err(where, f"semantics.served: unknown series '{constraint.served}'")
                continue
            pairs = []
            for node_id in members[constraint.id]:
                demand = fields_of[node_id].get("arrivals")
                if demand is None:
                    self.err(f"topology node '{node_id}'", f"constraint '{constraint.id}': the node has no arrivals")
                    continue
                out = f"{snake_case(node_id)}_capped_{constraint.id}"
                pairs.append((out, demand))
                capped[node_id] = out
            if pairs:
                self.add(CapDef(f"__constraint__{constraint.id}", tuple(pairs), constraint.served), where)
        return capped

    def overflow_targets(self, queue_of: dict[str, str]) -> None:
        """Point each queue's `wipOverflow` at a queue id and add its overflow to that queue's inflows."""
        incoming: dict[str, list[str]] = {}
        for def_id, definition in list(self.defs.items()):
            if (
                not isinstance(definition, QueueDef)
                or definition.overflow_to is None
                or definition.overflow_to == "loss"
            ):
                continue
            target = queue_of.get(definition.overflow_to, definition.overflow_to)
            if not isinstance(self.defs.get(target), QueueDef):
                self.err(f"queue '{def_id}'", f"wipOverflow: '{definition.overflow_to}' is not a queue")
                continue
            self.defs[def_id] = replace(definition, overflow_to=target)
            incoming.setdefault(target, []).append(definition.overflow_id)
        for target, sources in incoming.items():
            queue = self.defs[target]
            assert isinstance(queue, QueueDef)
            self.defs[target] = replace(queue, extra_inflows=tuple(sources))
