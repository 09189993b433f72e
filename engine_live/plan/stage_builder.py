"""Building the execution stages of a plan from series definitions (the compiler's back end).

`StageBuilder` knows the matrix row of every series and the initial value of every expression or
queue; it turns expressions into shape groups (one compiled closure per expression shape), queues
into one vectorized `QueueGroup`, constraints into `CapStage`s, sampled pmfs into `PmfStage`s and
all const series into one `ConstStage`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from engine_live.expressions.kernels import Fn, ShapeCompiler, Slots, shape_key
from engine_live.expressions.syntax import Expr
from engine_live.model.class_defs import ClassQueueDef, ClassSplitDef, class_row
from engine_live.model.series_defs import CapDef, ConstDef, ExprDef, PmfSampleDef, QueueDef, SeriesDef
from engine_live.plan.class_linear import LinearParts, linear_form
from engine_live.plan.class_stages import ClassQueueGroup, ClassSplitGroup, LinearSplitGroup
from engine_live.plan.stages import CapStage, ConstStage, ExprGroup, PmfStage, QueueGroup, Stage


class StageBuilder:
    """Stages over the matrix rows `row` (series id → row); `owner` maps a series to its definition."""

    def __init__(self, row: dict[str, int], owner: dict[str, str], initial: dict[str, float]) -> None:
        self.row = row
        self.owner = owner
        self.initial = initial  # definition id -> initial value (expressions and queues that have one)

    def rows_of(self, ids: Iterable[str]) -> np.ndarray:
        """The rows of some series ids, in order."""
        return np.array([self.row[series_id] for series_id in ids], dtype=np.intp)

    def init_of(self, name: str) -> float:
        """The value SHIFT reads before bin 0: a definition's initial, else 0."""
        return self.initial.get(name, 0.0) if self.owner.get(name) == name else 0.0

    def expr_groups(self, members: list[ExprDef]) -> list[Stage]:
        """One ExprGroup per expression shape among `members` (first-seen shape order)."""
        by_shape: dict[str, list[tuple[ExprDef, Slots]]] = defaultdict(list)
        for definition in members:
            key, slots = shape_key(definition.expr, self.init_of)
            by_shape[key].append((definition, slots))
        out: list[Stage] = []
        for key, items in by_shape.items():
            first = items[0][1]
            n_ref, n_num, n_init = len(first.refs), len(first.nums), len(first.inits)
            refs = [self.rows_of(slots.refs[i] for _, slots in items) for i in range(n_ref)]
            nums = [np.array([[slots.nums[i]] for _, slots in items]) for i in range(n_num)]
            inits = [np.array([[slots.inits[i]] for _, slots in items]) for i in range(n_init)]
            fn = ShapeCompiler(len(items), refs, nums, inits).compile(items[0][0].expr)
            out.append(ExprGroup(self.rows_of(definition.id for definition, _ in items), fn, key))
        return out

    def _closures(self, exprs: list[Expr]) -> Fn:
        """One closure for the same-shape expressions `exprs` (one per member)."""
        slots = [shape_key(expr, self.init_of)[1] for expr in exprs]
        first = slots[0]
        refs = [self.rows_of(one.refs[i] for one in slots) for i in range(len(first.refs))]
        nums = [np.array([[one.nums[i]] for one in slots]) for i in range(len(first.nums))]
        inits = [np.array([[one.inits[i]] for one in slots]) for i in range(len(first.inits))]
        return ShapeCompiler(len(exprs), refs, nums, inits).compile(exprs[0])

    def class_groups(self, members: list[ClassSplitDef]) -> list[Stage]:
        """One ClassSplitGroup per class-rule shape among `members` (first-seen order)."""
        by_shape: dict[tuple[str, ...], list[ClassSplitDef]] = defaultdict(list)
        for definition in members:
            exprs = (*definition.raw, *(definition.fallback or ()))
            key = (*(shape_key(expr, self.init_of)[0] for expr in exprs), str(definition.fallback is None))
            by_shape[key].append(definition)
        out: list[Stage] = []
        for items in by_shape.values():
            k = len(items[0].classes)
            out_rows = np.array([self.rows_of(item.outputs[c] for item in items) for c in range(k)], dtype=np.intp)
            mix = np.array(items[0].mix, dtype=np.float64)
            totals = self.rows_of(item.total for item in items)
            linear = self._linear_parts([item.raw for item in items])
            back = self._linear_parts([item.fallback for item in items if item.fallback])
            if linear is not None and (items[0].fallback is None or back is not None):
                parts = LinearParts.empty() if back is None else back
                out.append(LinearSplitGroup(out_rows.reshape(-1), out_rows, totals, linear, parts, mix))
                continue
            raw = self._class_closures([item.raw for item in items])
            fallback = None
            if items[0].fallback is not None:
                fallback = self._class_closures([item.fallback for item in items if item.fallback])
            out.append(ClassSplitGroup(out_rows.reshape(-1), out_rows, totals, raw, fallback, mix))
        return out

    def _class_closures(self, parts: list[tuple[Expr, ...]]) -> list[Fn]:
        """Closures over the class parts of n members, class-major: one over all K·n parts when every
        class has the same shape, else one per class."""
        k = len(parts[0])
        keys = {shape_key(parts[0][c], self.init_of)[0] for c in range(k)}
        if len(keys) == 1:
            return [self._closures([one[c] for c in range(k) for one in parts])]
        return [self._closures([one[c] for one in parts]) for c in range(k)]

    def _linear_parts(self, parts: list[tuple[Expr, ...]]) -> LinearParts | None:
        """The class parts of n members (`parts[i][c]`) as linear forms, or None if any is not one."""
        if not parts:
            return None
        forms = [
            [linear_form(one[c], self.row.__contains__, self.init_of) for one in parts] for c in range(len(parts[0]))
        ]
        if any(form is None for per_class in forms for form in per_class):
            return None
        return LinearParts.of(forms, self.row.__getitem__, 0)  # type: ignore[arg-type]  # row 0: the zero row

    def class_queue_group(self, members: list[ClassQueueDef]) -> ClassQueueGroup:
        """Per-class rows of queues, stepped together."""
        k = len(members[0].classes)
        m = max(len(queue.inflows) for queue in members)
        in_rows = np.zeros((m, k, len(members)), dtype=np.intp)
        for j, queue in enumerate(members):
            for i, inflow in enumerate(queue.inflows):
                in_rows[i, :, j] = self.rows_of(class_row(inflow, c) for c in queue.classes)

        def per_class(series: list[str]) -> np.ndarray:
            return np.array([self.rows_of(class_row(one, c) for one in series) for c in members[0].classes])

        q_class = per_class([queue.queue for queue in members])
        out_class = per_class([queue.outflow_id for queue in members])
        ovf_class = per_class([queue.overflow_id for queue in members])
        return ClassQueueGroup(
            rows=np.concatenate([q_class.reshape(-1), out_class.reshape(-1), ovf_class.reshape(-1)]),
            q_rows=self.rows_of(queue.queue for queue in members),
            out_rows=self.rows_of(queue.outflow_id for queue in members),
            ovf_rows=self.rows_of(queue.overflow_id for queue in members),
            in_rows=in_rows,
            q_class=q_class,
            out_class=out_class,
            ovf_class=ovf_class,
            initial=np.array([queue.initial for queue in members], dtype=np.float64),
            mix=np.array(members[0].mix, dtype=np.float64),
        )

    def queue_group(self, members: list[QueueDef]) -> QueueGroup:
        """All `members` stepped together as vectors."""
        row = self.row
        max_extra = max((len(queue.extra_inflows) for queue in members), default=0)
        extra = np.zeros((max_extra, len(members)), dtype=np.intp)
        for j, queue in enumerate(members):
            for i, source in enumerate(queue.extra_inflows):
                extra[i, j] = row[source]

        def optional_row(ref: str | None) -> int:
            return row[ref] if ref else 0

        q_rows = self.rows_of(queue.id for queue in members)
        out_rows = self.rows_of(queue.outflow_id for queue in members)
        ovf_rows = self.rows_of(queue.overflow_id for queue in members)
        return QueueGroup(
            rows=np.concatenate([q_rows, out_rows, ovf_rows]),
            q_rows=q_rows,
            out_rows=out_rows,
            ovf_rows=ovf_rows,
            in_rows=np.array([optional_row(queue.inflow) for queue in members], dtype=np.intp),
            extra_rows=extra,
            outflow_src=np.array([optional_row(queue.outflow) for queue in members], dtype=np.intp),
            loss_src=np.array([optional_row(queue.loss) for queue in members], dtype=np.intp),
            initial=np.array([queue.initial for queue in members], dtype=np.float64),
            wip_num=np.array([queue.wip_limit if queue.wip_limit is not None else np.nan for queue in members]),
            wip_rows=np.array([row[queue.wip_series] if queue.wip_series else -1 for queue in members], dtype=np.intp),
            period=np.array([queue.dispatch.period if queue.dispatch else 0 for queue in members], dtype=np.int64),
            phase=np.array([queue.dispatch.phase if queue.dispatch else 0 for queue in members], dtype=np.int64),
            cap_rows=np.array(
                [
                    row[queue.dispatch.capacity] if queue.dispatch and queue.dispatch.capacity else -1
                    for queue in members
                ],
                dtype=np.intp,
            ),
        )

    def single(self, definition: SeriesDef) -> list[Stage]:
        """The stages of one definition on its own (none for const and telemetry series)."""
        if isinstance(definition, ExprDef):
            return self.expr_groups([definition])
        if isinstance(definition, QueueDef):
            return [self.queue_group([definition])]
        if isinstance(definition, CapDef):
            demands = self.rows_of(demand for _, demand in definition.members)
            return [CapStage(self.rows_of(definition.outputs), demands, self.row[definition.capacity])]
        if isinstance(definition, ClassSplitDef):
            return self.class_groups([definition])
        if isinstance(definition, ClassQueueDef):
            return [self.class_queue_group([definition])]
        if isinstance(definition, PmfSampleDef):
            return [
                PmfStage(self.rows_of([definition.id]), definition.values, definition.probabilities, definition.seed)
            ]
        return []

    def const_stage(self, consts: list[ConstDef]) -> ConstStage:
        """Every const series in one stage; shorter series are zero-padded to the longest."""
        width = max(len(definition.values) for definition in consts)
        values = np.zeros((len(consts), width))
        for i, definition in enumerate(consts):
            values[i, : len(definition.values)] = definition.values
        return ConstStage(self.rows_of(definition.id for definition in consts), values)
