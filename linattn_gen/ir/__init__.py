"""Stage 2: the typed IR of a recurrence, built from a `Spec` by one pure function, `build_ir`.

The state update must read `S = D * S + outer(k, v)` and the output `o = scale * (q @ S)` (scale optional). The
decay D is analysed with sympy: its log is simplified, its free symbols decide the decay kind (no decay, constant per
head, data-dependent), its index kind decides whether it factors out of the key sum (scalar: the intra-chunk scores
are one matmul times a C x C decay mask) or not (per key dim: secondary-level chunking), and its derivative with
respect to the gate gives the gate gradient's chain-rule factor. A decay that is a key-vector times a value-vector
(`exp(g) * exp(f)`, the 2-D gate) must split into a key-gate part plus a value-gate part of its log.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import sympy

from ..errors import SpecError
from ..expr import Assignment, BinOp, Call, Neg, Node, Number, Symbol, render
from ..spec import Expression, LayerDecl, Spec


class DecayKind(enum.Enum):
    NONE = "none"
    CONSTANT = "constant"
    DATA_DEPENDENT = "data_dependent"


class GateShape(enum.Enum):
    NONE = "none"
    SCALAR = "scalar"  # one gate value per (b, t, h): [B, T, H]
    KEY = "key"  # one gate value per key dim: [B, T, H, K]
    VALUE = "value"  # one gate value per value dim: [B, T, H, V] (only beside a key gate: the 2-D gate)


class Kind(enum.Enum):
    """What one value of an expression is indexed by, per (batch, head, step)."""

    SCALAR = "scalar"
    KEY = "key-vector"
    VALUE = "value-vector"
    FEATURE = "feature-vector"  # a key-vector expanded by a feature map such as taylor2(): 1 + K + K^2 entries
    STATE = "state"


STATE_SYMBOL = "S"
PREVIOUS_STATE_SYMBOL = "S_prev"  # in the output only: the state before this step's update (RWKV reads it)
BUILTIN_SCALARS = {"scale": "the output scale (keyword argument)", "h": "the head index", "H": "the number of heads"}
FUNCTIONS = {"exp": 1, "log": 1, "elu": 1, "taylor2": 1, "outer": 2}
ELU = sympy.Function("elu")  # elu(x) = x for x > 0, exp(x) - 1 otherwise; for feature maps like elu(q) + 1
# Feature maps that expand a key-vector into more features than K. The kernels form the expanded features from the raw
# input inside their tiles, so the operand must be the map of an input name: taylor2(q), not taylor2(q) * 2.
EXPANDING_FEATURE_MAPS = ("taylor2",)
SHAPE_KIND = {("B", "T", "H"): Kind.SCALAR, ("B", "T", "H", "K"): Kind.KEY, ("B", "T", "H", "V"): Kind.VALUE,
              ("H", "K"): Kind.KEY}  # [H, K]: one key-sized vector per head, the same at every step
PER_HEAD_SHAPE = ("H", "K")


@dataclass(frozen=True, kw_only=True)
class Gate:
    name: str
    shape: GateShape


@dataclass(frozen=True, kw_only=True)
class Decay:
    kind: DecayKind
    gate: Gate | None
    log_decay: sympy.Expr  # log D_t: of the gate symbol, of h and H (constant), or 0
    dlog_decay_dgate: sympy.Expr | None  # chain-rule factor for the gate gradient
    factors_out_of_key_sum: bool  # True: exp(b_i - b_j) is the same for every key dim
    # The 2-D gate (GLA's general form): D = exp(log_decay)^T exp(log_value_decay), a key-side gate (`gate`, above)
    # times a value-side one. None/0 for every other decay.
    value_gate: Gate | None = None
    log_value_decay: sympy.Expr = sympy.Integer(0)  # of the value gate's symbol
    dlog_value_decay_dgate: sympy.Expr | None = None


@dataclass(frozen=True, kw_only=True)
class Derived:
    """An operand of the recurrence (query, key or value) written as an elementwise expression of the inputs, like
    HGRN2's key `1 - exp(g)`. The generated op evaluates it on the host before the kernels; autograd carries its
    gradient back to the inputs."""

    name: str  # the operand's name in the kernels (its role letter, unless an input already has it)
    role: str  # "query", "key" or "value"
    expression: sympy.Expr  # of the input symbols (real)
    text: str  # as written in the spec


@dataclass(frozen=True, kw_only=True)
class FeatureExpansion:
    """A feature map applied to the raw query and key inputs inside the op, widening the state's key axis.

    taylor2, the second-order Taylor feature map of Based (Arora et al. 2024; their `TaylorExp`), as exp(q . k /
    sqrt(K)) ~ 1 + s + s^2 / 2 with s = q . k / sqrt(K): x' = x / K^(1/4), then
        phi(x) = [1, x'_0 .. x'_{K-1}, x'_i x'_j / sqrt(2) for i, j in 0..K-1 (row-major)]
    1 + K + K^2 features (273 for K = 16), so that phi(q) . phi(k) = 1 + s + s^2 / 2. The state is [F, V] with F
    that many rows, in that order.
    """

    name: str  # "taylor2"
    input_scale_exponent: float  # x' = x * K ** input_scale_exponent before the map (Based: -1/4)

    def features(self, K: int) -> int:
        return 1 + K + K * K


TAYLOR2 = FeatureExpansion(name="taylor2", input_scale_exponent=-0.25)


@dataclass(frozen=True, kw_only=True)
class Recurrence:
    name: str
    description: str
    paper: str
    spec_path: str
    spec_sha256: str
    inputs: tuple[str, ...]  # the op's positional tensor arguments, in spec order
    input_kinds: tuple[Kind, ...]  # what each is indexed by per (batch, step, head)
    query: str  # the kernels' operands: input names, or the names of derived operands
    key: str
    value: str
    derived: tuple[Derived, ...]
    gates: tuple[Gate, ...]  # after q, k, v among the kernels' operands
    per_head_inputs: tuple[str, ...]  # [H, K] inputs: the same at every step (they may only appear in the bonus)
    # output 'q @ (S_prev + outer(b, v))': the output reads the state before the update, and the current token enters
    # through its bonus key b (RWKV's u * k) instead; bonus_key names b (an input, or the derived `bonus`)
    previous_state_output: bool
    bonus_key: str | None
    bonus: Derived | None
    decay: Decay
    scaled_output: bool
    output_name: str
    state_update: Assignment  # kept for the reference interpreter
    output: Assignment
    constants: tuple[Assignment, ...]
    normalization: str
    feature_map: str
    # taylor2(q) and taylor2(k) as the query and key (the same map on both; query and key are then the raw inputs)
    feature_expansion: FeatureExpansion | None
    chunk_size_hint: int | None
    sub_chunk_size_hint: int | None
    layer: LayerDecl

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.inputs

    def state_rows(self, K: int) -> int:
        """Rows of the state (its key axis) for key size K: K, or the expanded feature count."""
        return K if self.feature_expansion is None else self.feature_expansion.features(K)

    @property
    def operand_names(self) -> tuple[str, ...]:
        """What the kernels take: q, k, v (inputs or derived) and the gates."""
        return (self.query, self.key, self.value) + tuple(g.name for g in self.gates)


class _Checker:
    """Types expressions and converts decay expressions to sympy, with positioned errors."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.kinds: dict[str, Kind] = {i.name: SHAPE_KIND[i.shape] for i in spec.inputs}
        self.constants: dict[str, Expression] = {c.assignment.target: c for c in spec.constants}
        for const in spec.constants:
            name = const.assignment.target
            if name in self.kinds or name in BUILTIN_SCALARS or name in (STATE_SYMBOL, PREVIOUS_STATE_SYMBOL):
                raise SpecError(f"constant '{name}' shadows an input or built-in name", const.origin)

    def error(self, expr: Expression, node: Node, message: str) -> SpecError:
        return SpecError(message, expr.position_of(node))

    def kind(self, expr: Expression, node: Node, *, allow_state: bool = True, constant_only: bool = False) -> Kind:
        if isinstance(node, Number):
            return Kind.SCALAR
        if isinstance(node, Symbol):
            name = node.name
            if name in (STATE_SYMBOL, PREVIOUS_STATE_SYMBOL) and allow_state and not constant_only:
                return Kind.STATE
            if name in BUILTIN_SCALARS:
                return Kind.SCALAR
            if name in self.constants:
                return Kind.SCALAR
            if name in self.kinds and not constant_only:
                return self.kinds[name]
            if constant_only:
                raise self.error(expr, node, f"'{name}' cannot appear in a constant; constants may use numbers, h and H")
            known = sorted([*self.kinds, *BUILTIN_SCALARS, *self.constants, STATE_SYMBOL, PREVIOUS_STATE_SYMBOL])
            raise self.error(expr, node, f"unknown symbol '{name}'; known symbols: {', '.join(known)}")
        if isinstance(node, Neg):
            return self.kind(expr, node.operand, allow_state=allow_state, constant_only=constant_only)
        if isinstance(node, Call):
            if node.function not in FUNCTIONS:
                raise self.error(expr, node, f"unknown function '{node.function}'; known: {', '.join(FUNCTIONS)}")
            if len(node.args) != FUNCTIONS[node.function]:
                raise self.error(
                    expr, node, f"{node.function}() takes {FUNCTIONS[node.function]} argument(s), got {len(node.args)}"
                )
            kinds = [self.kind(expr, a, allow_state=allow_state, constant_only=constant_only) for a in node.args]
            if node.function == "outer":
                if kinds not in ([Kind.KEY, Kind.VALUE], [Kind.FEATURE, Kind.VALUE]):
                    raise self.error(expr, node, "outer(a, b) needs a key-vector and a value-vector, got "
                                     f"{kinds[0].value} and {kinds[1].value}")
                return Kind.STATE
            if node.function in EXPANDING_FEATURE_MAPS:
                if kinds[0] is not Kind.KEY:
                    raise self.error(expr, node, f"{node.function}() expands a key-vector, got a {kinds[0].value}")
                return Kind.FEATURE
            if kinds[0] is Kind.FEATURE:
                raise self.error(expr, node, f"{node.function}() of an expanded feature vector is not supported")
            if kinds[0] is Kind.STATE:
                raise self.error(expr, node, f"{node.function}() of the state is not a linear recurrence")
            return kinds[0]
        if isinstance(node, BinOp):
            left = self.kind(expr, node.left, allow_state=allow_state, constant_only=constant_only)
            right = self.kind(expr, node.right, allow_state=allow_state, constant_only=constant_only)
            return self._binary(expr, node, left, right)
        raise TypeError(node)

    def _binary(self, expr: Expression, node: BinOp, left: Kind, right: Kind) -> Kind:
        op = node.op
        if Kind.FEATURE in (left, right) and not (op == "@" and left is Kind.FEATURE and right is Kind.STATE):
            raise self.error(expr, node, "an expanded feature vector (taylor2(x)) may only be the whole query in "
                             "'taylor2(q) @ S' or the whole key in 'outer(taylor2(k), v)'")
        if op == "@":
            if left in (Kind.KEY, Kind.FEATURE) and right is Kind.STATE:
                return Kind.VALUE
            raise self.error(expr, node, f"'@' needs a key-vector @ state, got {left.value} @ {right.value}")
        if op in ("+", "-"):
            if left is right:
                return left
            if Kind.SCALAR in (left, right) and Kind.STATE not in (left, right):  # a number or scalar broadcasts
                return right if left is Kind.SCALAR else left
            raise self.error(expr, node, f"cannot add a {left.value} and a {right.value}")
        if op == "**":
            if right is not Kind.SCALAR or left is Kind.STATE:
                raise self.error(expr, node, f"'**' needs a scalar exponent, got {left.value} ** {right.value}")
            return left
        # * and /
        if op == "/" and right is not Kind.SCALAR and right is not left:
            raise self.error(expr, node, f"cannot divide a {left.value} by a {right.value}")
        if left is Kind.SCALAR:
            return right
        if right is Kind.SCALAR or left is right:
            return left
        if {left, right} in ({Kind.KEY, Kind.STATE}, {Kind.VALUE, Kind.STATE}):
            return Kind.STATE
        if op == "*" and {left, right} == {Kind.KEY, Kind.VALUE}:
            return Kind.STATE  # key-vector times value-vector: their outer product, a 2-D decay like exp(g) * exp(f)
        raise self.error(expr, node, f"cannot multiply a {left.value} by a {right.value}")

    def to_sympy(self, expr: Expression, node: Node, symbols: dict[str, sympy.Symbol],
                 context: str = "a decay") -> sympy.Expr:
        if isinstance(node, Number):
            return sympy.nsimplify(node.text, rational=True)
        if isinstance(node, Symbol):
            if node.name in self.constants:
                const = self.constants[node.name]
                return self.to_sympy(const, const.assignment.value, symbols, context)
            if node.name not in symbols:
                raise self.error(expr, node, f"'{node.name}' cannot appear in {context}")
            return symbols[node.name]
        if isinstance(node, Neg):
            return -self.to_sympy(expr, node.operand, symbols, context)
        if isinstance(node, Call):
            args = [self.to_sympy(expr, a, symbols, context) for a in node.args]
            if node.function == "outer":  # a key-vector times a value-vector: elementwise, the product of the two
                return args[0] * args[1]
            return {"exp": sympy.exp, "log": sympy.log, "elu": ELU}[node.function](args[0])
        if isinstance(node, BinOp):
            a = self.to_sympy(expr, node.left, symbols, context)
            b = self.to_sympy(expr, node.right, symbols, context)
            return {"+": a + b, "-": a - b, "*": a * b, "/": a / b, "**": a**b}[node.op]
        raise self.error(expr, node, f"unsupported expression in {context}")


def _terms(node: Node) -> list[Node]:
    if isinstance(node, BinOp) and node.op == "+":
        return _terms(node.left) + _terms(node.right)
    return [node]


def _mentions(node: Node, name: str) -> bool:
    from ..expr import walk

    return any(isinstance(n, Symbol) and n.name == name for n in walk(node))


def _split_decay_term(node: Node) -> Node | None:
    """`D * S`, `S * D` or `S` -> D (None for plain S)."""
    if isinstance(node, Symbol) and node.name == STATE_SYMBOL:
        return None
    if isinstance(node, BinOp) and node.op == "*":
        if isinstance(node.right, Symbol) and node.right.name == STATE_SYMBOL and not _mentions(node.left, "S"):
            return node.left
        if isinstance(node.left, Symbol) and node.left.name == STATE_SYMBOL and not _mentions(node.right, "S"):
            return node.right
    raise ValueError


def build_ir(spec: Spec) -> Recurrence:
    """Type-check the spec's expressions and analyse its decay. Raises SpecError on anything unsupported."""
    checker = _Checker(spec)
    for const in spec.constants:
        checker.kind(const, const.assignment.value, constant_only=True)

    update = spec.state_update
    if update.assignment.target != STATE_SYMBOL:
        raise SpecError(f"recurrence.state must assign the state '{STATE_SYMBOL}'", update.position_of(update.assignment))
    if checker.kind(update, update.assignment.value) is not Kind.STATE:
        raise SpecError("recurrence.state must be a state (K x V) expression", update.position_of(update.assignment.value))
    form = "the state update must have the form 'S = D * S + outer(k, v)'"
    decay_nodes, outer_nodes = [], []
    for term in _terms(update.assignment.value):
        if _mentions(term, STATE_SYMBOL):
            try:
                decay_nodes.append(_split_decay_term(term))
            except ValueError:
                raise SpecError(f"{form}; this term is not D * S", update.position_of(term)) from None
        elif isinstance(term, Call) and term.function == "outer":
            outer_nodes.append(term)
        else:
            raise SpecError(f"{form}; unexpected term", update.position_of(term))
    if len(decay_nodes) != 1 or len(outer_nodes) != 1:
        raise SpecError(f"{form}: exactly one decay term and one outer product",
                        update.position_of(update.assignment.value))
    outer = outer_nodes[0]
    operand_nodes = {"key": (update, outer.args[0], Kind.KEY), "value": (update, outer.args[1], Kind.VALUE)}

    out = spec.output
    if checker.kind(out, out.assignment.value, allow_state=True) is not Kind.VALUE:
        raise SpecError("recurrence.output must be a value-vector, like scale * (q @ S)", out.position_of(out.assignment.value))
    scaled, core = False, out.assignment.value
    if isinstance(core, BinOp) and core.op == "*":
        for this, other in ((core.left, core.right), (core.right, core.left)):
            if isinstance(this, Symbol) and this.name == "scale":
                scaled, core = True, other
                break
    output_forms = ("recurrence.output must have the form 'o = scale * (q @ S)', or 'o = scale * (q @ (S_prev + "
                    "outer(b, v)))' to read the state before the update (scale optional)")
    reads = core.right if isinstance(core, BinOp) and core.op == "@" else None
    bonus_node = None
    if isinstance(reads, BinOp) and reads.op == "+" and _mentions(reads, PREVIOUS_STATE_SYMBOL):
        prev, bonus = (reads.left, reads.right) if isinstance(reads.left, Symbol) else (reads.right, reads.left)
        if not (isinstance(prev, Symbol) and prev.name == PREVIOUS_STATE_SYMBOL and isinstance(bonus, Call)
                and bonus.function == "outer" and render(bonus.args[1]) == render(outer.args[1])):
            raise SpecError(f"{output_forms}, with the v of the state update's outer(k, v)", out.position_of(reads))
        bonus_node = bonus.args[0]
    elif not (isinstance(reads, Symbol) and reads.name == STATE_SYMBOL):
        raise SpecError(output_forms, out.position_of(out.assignment.value))
    operand_nodes["query"] = (out, core.left, Kind.KEY)
    names, derived, expansions = _operands(spec, checker, operand_nodes)
    query, key, value = names["query"], names["key"], names["value"]
    expansion = _feature_expansion(spec, expansions, operand_nodes)
    bonus_key, bonus = None, None
    if bonus_node is not None:
        bonus_names, bonus_derived, _ = _operands(spec, checker, {"bonus": (out, bonus_node, Kind.KEY)})
        bonus_key, bonus = bonus_names["bonus"], (bonus_derived[0] if bonus_derived else None)

    gate_decls = {g.name: g for g in spec.gates}
    decay = _analyse_decay(spec, checker, decay_nodes[0], gate_decls)
    if expansion is not None and decay.kind is not DecayKind.NONE:
        raise SpecError(f"{expansion.name}() feature maps with a decay are not supported yet (the expanded-feature "
                        "kernels have no decay)", update.position_of(decay_nodes[0]))
    used = {query, key, value} | {g.name for g in (decay.gate, decay.value_gate) if g}
    for d in derived:
        used |= {s.name for s in d.expression.free_symbols}
    per_head = tuple(i.name for i in spec.inputs if i.shape == PER_HEAD_SHAPE)
    for name in per_head:
        if name in used:
            raise SpecError(f"input '{name}' is [H, K], the same at every step: it may appear only in the bonus key b "
                            "of 'S_prev + outer(b, v)'", spec.input(name).position)
    if bonus_key is not None:
        used |= {bonus_key} | ({s.name for s in bonus.expression.free_symbols} if bonus else set())
        if spec.normalization == "sum":
            raise SpecError("normalization: sum with an output that reads S_prev is not supported yet",
                            spec.positions.get("normalization", out.origin))
        if decay.kind is DecayKind.CONSTANT:
            raise SpecError("an output that reads S_prev needs a data-dependent decay or none (a constant decay is not "
                            "supported yet)", out.position_of(out.assignment.value))
        if decay.gate is not None and sympy.simplify(decay.log_decay.subs(
                sympy.Symbol(decay.gate.name, real=True), 0)) != 0:
            raise SpecError(f"an output that reads S_prev needs a decay that is 1 where the gate is 0 (the step before "
                            f"the first token has no decay); here log D = {decay.log_decay}",
                            out.position_of(out.assignment.value))
    for decl in spec.inputs:
        if decl.name not in used:
            raise SpecError(f"input '{decl.name}' is declared but not used by the recurrence", decl.position)
    for name, decl in gate_decls.items():
        if name not in {g.name for g in (decay.gate, decay.value_gate) if g}:
            raise SpecError(f"gate '{name}' does not appear in the decay", decl.position)
    gates = tuple(g for g in (decay.gate, decay.value_gate) if g)
    if decay.value_gate is not None:
        if bonus_key is not None:
            raise SpecError("an output that reads S_prev with a decay per value dim is not supported yet",
                            out.position_of(out.assignment.value))
        if spec.normalization == "sum":
            raise SpecError("normalization: sum with a decay per value dim is not supported yet (the normaliser runs "
                            "the recurrence on a value of ones, whose width is not V)",
                            spec.positions.get("normalization", update.origin))
    if spec.normalization == "sum" and value not in {i.name for i in spec.inputs}:
        raise SpecError("normalization: sum needs the value in outer(k, v) to be an input: the normaliser runs the "
                        "recurrence with v = 1", spec.positions.get("normalization", update.origin))
    if not gates:
        gate_keys = [k for k in ("gate_projection", "gate_rank", "gate_temperature", "gate_bias")
                     if k in spec.layer.given]
        if gate_keys:
            raise SpecError(f"layer.{gate_keys[0]} is set but the recurrence has no gate input", spec.layer.position)

    return Recurrence(
        name=spec.name, description=spec.description, paper=spec.paper, spec_path=spec.path, spec_sha256=spec.sha256,
        inputs=tuple(i.name for i in spec.inputs), input_kinds=tuple(SHAPE_KIND[i.shape] for i in spec.inputs),
        query=query, key=key, value=value, derived=derived,
        gates=gates, per_head_inputs=per_head, previous_state_output=bonus_key is not None, bonus_key=bonus_key,
        bonus=bonus, decay=decay, scaled_output=scaled,
        output_name=out.assignment.target, state_update=update.assignment, output=out.assignment,
        constants=tuple(c.assignment for c in spec.constants), normalization=spec.normalization,
        feature_map=spec.feature_map, feature_expansion=expansion, chunk_size_hint=spec.hints.chunk_size,
        sub_chunk_size_hint=spec.hints.sub_chunk_size, layer=spec.layer,
    )


def _operands(spec: Spec, checker: _Checker, nodes: dict) -> tuple[dict, tuple[Derived, ...], dict]:
    """role -> operand name for query, key and value, the derived ones among them, and role -> the expanding feature
    map applied to it (taylor2(q): the operand is the raw input q, expanded inside the kernels).

    An operand is an input name, an expanding feature map of an input name, or an elementwise expression of inputs
    (numbers, constants, exp, log), which becomes a derived operand named after its role.
    """
    names, derived, expansions = {}, [], {}
    inputs = {i.name for i in spec.inputs}
    for role, (expr, node, kind) in nodes.items():
        if isinstance(node, Call) and node.function in EXPANDING_FEATURE_MAPS:
            (arg,) = node.args
            if role not in ("query", "key"):
                raise SpecError(f"{node.function}() may expand only the query and the key, not the {role}",
                                expr.position_of(node))
            if not (isinstance(arg, Symbol) and arg.name in inputs and checker.kind(expr, arg) is Kind.KEY):
                raise SpecError(f"{node.function}() must be applied to a [B, T, H, K] input by name, like "
                                f"{node.function}(q): the kernels expand the raw input", expr.position_of(arg))
            names[role], expansions[role] = arg.name, node
            continue
        if isinstance(node, Symbol) and node.name in inputs:
            if checker.kind(expr, node) is not kind:
                raise SpecError(f"the {role} must be a {kind.value}, but '{node.name}' is a "
                                f"{checker.kind(expr, node).value}", expr.position_of(node))
            names[role] = node.name
            continue
        got = checker.kind(expr, node, allow_state=False)
        if got is not kind:
            raise SpecError(f"the {role} must be a {kind.value}; this expression is a {got.value}",
                            expr.position_of(node))
        symbols = {name: sympy.Symbol(name, real=True) for name in inputs}
        expression = checker.to_sympy(expr, node, symbols, f"a derived {role} (it may use inputs, numbers, exp, log)")
        name = role[0] if role[0] not in inputs else f"{role[0]}_derived"
        names[role] = name
        derived.append(Derived(name=name, role=role, expression=expression, text=render(node)))
    return names, tuple(derived), expansions


def _feature_expansion(spec: Spec, expansions: dict, nodes: dict) -> FeatureExpansion | None:
    """The expanding feature map of query and key: both must use the same one (or none), so that the state's rows
    are the expanded features on both sides."""
    if not expansions:
        return None
    functions = {role: node.function for role, node in expansions.items()}
    if set(functions) != {"query", "key"} or len(set(functions.values())) != 1:
        role, node = next(iter(expansions.items()))
        other = "key" if role == "query" else "query"
        expr = nodes[other][0]
        raise SpecError(f"{node.function}() must expand both the query and the key (the state's rows are the expanded "
                        f"features); the {other} here is {render(nodes[other][1])}",
                        expr.position_of(nodes[other][1]))
    return {"taylor2": TAYLOR2}[functions["query"]]


def _analyse_decay(spec: Spec, checker: _Checker, node: Node | None, gate_decls: dict) -> Decay:
    update = spec.state_update
    declared = spec.decay
    where = update.position_of(node) if node is not None else update.position_of(update.assignment.value)
    value_gate, log_value_decay = None, sympy.Integer(0)
    if node is None:
        kind, log_decay, gate, index_kind = DecayKind.NONE, sympy.Integer(0), None, Kind.SCALAR
    else:
        index_kind = checker.kind(update, node, allow_state=False)
        if index_kind is Kind.VALUE:
            raise SpecError("a decay along the value dim alone is not supported yet (supported: scalar, per key dim, "
                            "or per key dim times per value dim, like exp(g) * exp(f))", where)
        h = sympy.Symbol("h", integer=True, nonnegative=True)
        H = sympy.Symbol("H", integer=True, positive=True)
        symbols = {"h": h, "H": H}
        for name in gate_decls:
            symbols[name] = sympy.Symbol(name, real=True)
        decay_expr = checker.to_sympy(update, node, symbols)
        if decay_expr.has(ELU):
            raise SpecError("elu() cannot appear in a decay (write the decay with exp and log)", where)
        log_decay = sympy.simplify(sympy.expand_log(sympy.log(decay_expr), force=True))
        gate_syms = sorted((s for s in log_decay.free_symbols if s.name in gate_decls), key=lambda s: s.name)
        if index_kind is Kind.STATE:
            gate, value_gate, log_decay, log_value_decay = _split_two_dimensional_decay(spec, log_decay, gate_syms,
                                                                                        where)
            kind = DecayKind.DATA_DEPENDENT
        elif not gate_syms:
            if log_decay == 0:
                kind, gate = DecayKind.NONE, None
            else:
                kind, gate = DecayKind.CONSTANT, None
                _check_constant_decay(decay_expr, h, H, where)
        else:
            if len(gate_syms) > 1:
                raise SpecError("a decay may use one gate input (or one per side, key and value: exp(g) * exp(f))",
                                where)
            if log_decay.free_symbols - set(gate_syms):
                raise SpecError("a data-dependent decay may depend only on its gate (not on h or H)", where)
            gate_name = gate_syms[0].name
            shape = spec.input(gate_name).shape
            gate = Gate(name=gate_name, shape=GateShape.SCALAR if len(shape) == 3 else GateShape.KEY)
            if shape[-1] == "V":
                raise SpecError(f"gate '{gate_name}' of shape [B, T, H, V] is not supported alone; a value-side gate "
                                "needs a key-side one beside it (exp(g) * exp(f))", where)
            kind = DecayKind.DATA_DEPENDENT
    if node is not None and index_kind is Kind.SCALAR and gate is not None and gate.shape is GateShape.KEY:
        index_kind = Kind.KEY

    if declared.kind != kind.value:
        raise SpecError(
            f"decay kind is declared '{declared.kind}' but the state update's decay is {kind.value}"
            f" (log D = {log_decay + log_value_decay})", declared.position)
    found = "key_value" if value_gate else (gate.shape.value if gate else GateShape.NONE.value)
    if declared.gate != found:
        pos = spec.positions.get("decay.gate", declared.position)
        raise SpecError(f"decay gate is declared '{declared.gate}' but the decay's gate is {found}", pos)
    for used in (gate, value_gate):
        if used is not None and used.name not in gate_decls:
            raise SpecError(f"input '{used.name}' is used as a gate; declare it under 'gates:' with its space (log)",
                            where)
    dlog = sympy.simplify(sympy.diff(log_decay, sympy.Symbol(gate.name, real=True))) if gate else None
    dlog_value = (sympy.simplify(sympy.diff(log_value_decay, sympy.Symbol(value_gate.name, real=True)))
                  if value_gate else None)
    return Decay(kind=kind, gate=gate, log_decay=log_decay, dlog_decay_dgate=dlog,
                 factors_out_of_key_sum=index_kind is Kind.SCALAR, value_gate=value_gate,
                 log_value_decay=log_value_decay, dlog_value_decay_dgate=dlog_value)


def _split_two_dimensional_decay(spec: Spec, log_decay: sympy.Expr, gate_syms: list, where):
    """A state-shaped decay (a key-vector times a value-vector, like exp(g) * exp(f)) must factor into a key-side gate
    [B, T, H, K] times a value-side gate [B, T, H, V]: log D = a(g) + b(f). Returns (key gate, value gate, a, b)."""
    if log_decay.free_symbols - set(gate_syms):
        raise SpecError("a data-dependent decay may depend only on its gates (not on h or H)", where)
    sides = {"K": [], "V": []}
    for sym in gate_syms:
        shape = spec.input(sym.name).shape
        if len(shape) != 4:
            raise SpecError(f"a decay per key and value dim needs gates of shape [B, T, H, K] and [B, T, H, V]; gate "
                            f"'{sym.name}' is [{', '.join(shape)}]", where)
        sides[shape[-1]].append(sym)
    if len(sides["K"]) != 1 or len(sides["V"]) != 1:
        raise SpecError("a decay per key and value dim needs exactly one gate of shape [B, T, H, K] and one of shape "
                        "[B, T, H, V], like exp(g) * exp(f); found "
                        f"{', '.join(s.name for s in gate_syms) or 'none'}", where)
    (key_sym,), (value_sym,) = sides["K"], sides["V"]
    key_part, value_part = sympy.Integer(0), sympy.Integer(0)
    for term in sympy.Add.make_args(sympy.expand(log_decay)):
        mentions = term.free_symbols
        if mentions == {key_sym}:
            key_part += term
        elif mentions == {value_sym}:
            value_part += term
        else:
            raise SpecError(f"a decay per key and value dim must factor as D(g) * D(f), one gate per side; log D = "
                            f"{log_decay} has the term {term}", where)
    key_gate = Gate(name=key_sym.name, shape=GateShape.KEY)
    value_gate = Gate(name=value_sym.name, shape=GateShape.VALUE)
    return key_gate, value_gate, sympy.simplify(key_part), sympy.simplify(value_part)


def _check_constant_decay(decay_expr: sympy.Expr, h: sympy.Symbol, H: sympy.Symbol, where) -> None:
    """A constant decay must lie in (0, 1] for every head of every plausible head count."""
    for heads in (1, 8, 64):
        for head in range(heads):
            value = decay_expr.subs({h: head, H: heads})
            try:
                number = float(value)
            except TypeError:
                raise SpecError(f"the constant decay {decay_expr} does not evaluate to a number", where) from None
            if not 0.0 < number <= 1.0:
                raise SpecError(f"the constant decay {decay_expr} is {number:g} at h={head}, H={heads}; "
                                "it must lie in (0, 1]", where)
