"""Stage 1: read a YAML spec into a frozen `Spec`, keeping the file position of every value for diagnostics.

YAML gives the structure (inputs and shapes, decay kind, gate shape, normalization, feature map, hints); the
recurrence and decay expressions are strings in the lark expression language (`expr.py`). Nothing in a spec is
ever executed: expressions are parsed, never evaluated by Python.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import Position, SpecError
from .expr import Assignment, ExpressionSyntaxError, Node, parse_assignment

DIMENSIONS = ("B", "T", "H", "K", "V")
DECAY_KINDS = ("none", "constant", "data_dependent")
GATE_SHAPES = ("none", "scalar", "key", "key_value")
NORMALIZATIONS = ("none", "sum")
FEATURE_MAPS = ("identity",)
TOP_LEVEL_KEYS = (
    "name", "description", "paper", "inputs", "gates", "constants", "decay", "recurrence",
    "normalization", "feature_map", "hints", "layer",
)
LAYER_KEYS = ("gate_projection", "gate_rank", "gate_temperature", "gate_bias", "output_norm", "short_conv")
GATE_PROJECTIONS = ("low_rank", "linear")
OUTPUT_NORMS = ("rms_swish", "group_norm", "none")
HINT_KEYS = ("chunk_size", "sub_chunk_size")


@dataclass(frozen=True, kw_only=True)
class Expression:
    """One parsed assignment and where its text starts in the YAML file."""

    assignment: Assignment
    text: str
    origin: Position
    block: bool  # a `|` block scalar: expression line n sits on file line origin.line + n - 1

    def position_of(self, node: Node) -> Position:
        return _locate(self.origin, self.block, node.line, node.column)


@dataclass(frozen=True, kw_only=True)
class InputDecl:
    name: str
    shape: tuple[str, ...]
    position: Position


@dataclass(frozen=True, kw_only=True)
class GateDecl:
    name: str
    space: str
    position: Position


@dataclass(frozen=True, kw_only=True)
class DecayDecl:
    kind: str
    gate: str
    position: Position


@dataclass(frozen=True, kw_only=True)
class Hints:
    chunk_size: int | None = None
    sub_chunk_size: int | None = None


@dataclass(frozen=True, kw_only=True)
class LayerDecl:
    """How the generated `Layer` produces the op's inputs from hidden states and post-processes its output.

    The gate is `logsigmoid(projection(x)) / gate_temperature` (GLA paper: low-rank projection, temperature 16);
    output_norm is a per-head RMSNorm times a swish output gate (GLA), a per-head group norm (RetNet), or none.
    short_conv is the default kernel size of a causal depthwise convolution (with SiLU) over the projected inputs, as
    in Mamba and fla's layers; 0 leaves it out. gate_bias, when given, is the initial bias of the gate projection's
    last layer, so that the initial decay per step is logsigmoid(gate_bias) / gate_temperature (a forget-gate bias,
    as in LSTMs and Mamba's dt initialisation); None keeps PyTorch's default initialisation.
    """

    gate_projection: str = "low_rank"
    gate_rank: int = 16
    gate_temperature: float = 16.0
    gate_bias: float | None = None
    output_norm: str = "rms_swish"
    short_conv: int = 0
    position: Position | None = None
    given: tuple[str, ...] = ()  # the keys the spec set (the rest are defaults)


@dataclass(frozen=True, kw_only=True)
class Spec:
    path: str
    source: str
    sha256: str
    name: str
    description: str
    paper: str
    inputs: tuple[InputDecl, ...]
    gates: tuple[GateDecl, ...]
    constants: tuple[Expression, ...]
    decay: DecayDecl
    state_update: Expression
    output: Expression
    normalization: str
    feature_map: str
    hints: Hints
    layer: LayerDecl
    positions: dict  # dotted key ("decay.kind") -> Position, for later stages' diagnostics

    def input(self, name: str) -> InputDecl | None:
        return next((i for i in self.inputs if i.name == name), None)


def _locate(origin: Position, block: bool, line: int, column: int) -> Position:
    if line == 1 and not block:
        return origin.shifted(columns=column - 1)
    if block:
        return Position(path=origin.path, line=origin.line + line - 1, column=origin.column + column - 1)
    return Position(path=origin.path, line=origin.line + line - 1, column=column)


class _Reader:
    """Walks yaml nodes and turns every structural mistake into a positioned SpecError."""

    def __init__(self, path: str):
        self.path = path

    def pos(self, node: yaml.Node) -> Position:
        return Position(path=self.path, line=node.start_mark.line + 1, column=node.start_mark.column + 1)

    def mapping(self, node: yaml.Node, what: str, allowed: tuple[str, ...]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise SpecError(f"{what} must be a mapping of keys to values", self.pos(node))
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise SpecError(f"keys of {what} must be plain names", self.pos(key))
            name = key.value
            if allowed and name not in allowed:
                hint = difflib.get_close_matches(name, allowed, n=1)
                suggestion = f"; did you mean '{hint[0]}'?" if hint else f" (known keys: {', '.join(allowed)})"
                raise SpecError(f"unknown key '{name}' in {what}{suggestion}", self.pos(key))
            if name in out:
                raise SpecError(f"duplicate key '{name}' in {what}", self.pos(key))
            out[name] = (key, value)
        return out

    def string(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            raise SpecError(f"{what} must be a string", self.pos(node))
        return node.value

    def choice(self, node: yaml.Node, what: str, choices: tuple[str, ...]) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise SpecError(f"{what} must be one of: {', '.join(choices)}", self.pos(node))
        if node.value not in choices:
            raise SpecError(f"{what} '{node.value}' is not supported; supported: {', '.join(choices)}", self.pos(node))
        return node.value

    def integer(self, node: yaml.Node, what: str) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:int":
            raise SpecError(f"{what} must be an integer", self.pos(node))
        return int(node.value)

    def expression(self, node: yaml.Node, what: str) -> Expression:
        text = self.string(node, what)
        block = node.style in ("|", ">")
        if block:
            # block scalar content starts on the next line, indented; find the indentation from the raw buffer
            line0 = node.start_mark.line + 1
            raw_lines = node.start_mark.buffer.rstrip("\0").splitlines() if node.start_mark.buffer else []
            body = raw_lines[line0] if line0 < len(raw_lines) else ""
            indent = len(body) - len(body.lstrip(" "))
            origin = Position(path=self.path, line=line0 + 1, column=indent + 1)
        else:
            quoted = 1 if node.style in ("'", '"') else 0
            origin = self.pos(node).shifted(columns=quoted)
        try:
            assignment = parse_assignment(text.strip("\n"))
        except ExpressionSyntaxError as err:
            raise SpecError(f"in {what}: {err.message}", _locate(origin, block, err.line, err.column)) from None
        return Expression(assignment=assignment, text=text, origin=origin, block=block)


def parse_spec(path: str | Path, source: str | None = None) -> Spec:
    """Read and structurally check a spec file. Raises SpecError (with a position) on any mistake."""
    path_str = str(path)
    if source is None:
        try:
            source = Path(path).read_text()
        except FileNotFoundError:
            raise SpecError("no such file", path=path_str) from None
        except IsADirectoryError:
            raise SpecError("is a directory, not a spec file", path=path_str) from None
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(f"cannot read spec: {err}", path=path_str) from None
    r = _Reader(path_str)
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        pos = Position(path=path_str, line=mark.line + 1, column=mark.column + 1) if mark else None
        raise SpecError(f"YAML syntax error: {err.problem or err.context}", pos, path=path_str) from None
    except yaml.YAMLError as err:
        raise SpecError(f"YAML error: {err}", path=path_str) from None
    if root is None:
        raise SpecError("the spec is empty; it needs at least name, inputs and recurrence",
                        Position(path=path_str, line=1, column=1))
    top = r.mapping(root, "the spec", TOP_LEVEL_KEYS)
    positions: dict[str, Position] = {k: r.pos(v) for k, (_, v) in top.items()}
    root_pos = r.pos(root)

    def required(key: str):
        if key not in top:
            raise SpecError(f"missing required key '{key}'", root_pos)
        return top[key][1]

    name = r.string(required("name"), "name")
    if not name.isidentifier():
        raise SpecError(f"name '{name}' must be a Python identifier (it names the generated module)", positions["name"])
    description = r.string(top["description"][1], "description") if "description" in top else ""
    paper = r.string(top["paper"][1], "paper") if "paper" in top else ""

    inputs: list[InputDecl] = []
    for input_name, (key, value) in r.mapping(required("inputs"), "inputs", ()).items():
        if not input_name.isidentifier():
            raise SpecError(f"input name '{input_name}' must be an identifier", r.pos(key))
        if not isinstance(value, yaml.SequenceNode):
            raise SpecError(f"shape of input '{input_name}' must be a list like [B, T, H, K]", r.pos(value))
        dims = []
        for dim in value.value:
            if not isinstance(dim, yaml.ScalarNode) or dim.value not in DIMENSIONS:
                raise SpecError(
                    f"unknown dimension in shape of '{input_name}'; dimensions are {', '.join(DIMENSIONS)}", r.pos(dim)
                )
            dims.append(dim.value)
        if not ((tuple(dims[:3]) == ("B", "T", "H") and len(dims) <= 4) or tuple(dims) == ("H", "K")):
            raise SpecError(
                f"input '{input_name}' has shape [{', '.join(dims)}]; inputs are [B, T, H], [B, T, H, K|V] or [H, K] "
                "(a per-head parameter, like RWKV's bonus u)",
                r.pos(value),
            )
        inputs.append(InputDecl(name=input_name, shape=tuple(dims), position=r.pos(key)))

    gates: list[GateDecl] = []
    if "gates" in top:
        for gate_name, (key, value) in r.mapping(top["gates"][1], "gates", ()).items():
            if not any(i.name == gate_name for i in inputs):
                raise SpecError(f"gate '{gate_name}' is not one of the inputs", r.pos(key))
            fields = r.mapping(value, f"gate '{gate_name}'", ("space",))
            space = r.choice(fields["space"][1], "gate space", ("log",)) if "space" in fields else "log"
            gates.append(GateDecl(name=gate_name, space=space, position=r.pos(key)))

    constants: list[Expression] = []
    if "constants" in top:
        for const_name, (key, value) in r.mapping(top["constants"][1], "constants", ()).items():
            text = r.string(value, f"constant '{const_name}'")
            # a constant is written `name: expr`; parse it as the assignment `name = expr`
            fake = yaml.ScalarNode(tag=value.tag, value=f"{const_name} = {text}", start_mark=value.start_mark,
                                   end_mark=value.end_mark, style=value.style)
            expr = r.expression(fake, f"constant '{const_name}'")
            shift = len(const_name) + 3  # positions must point into the user's text, not the `name = ` prefix
            constants.append(Expression(assignment=expr.assignment, text=text,
                                        origin=expr.origin.shifted(columns=-shift), block=expr.block))

    decay_fields = r.mapping(required("decay"), "decay", ("kind", "gate"))
    decay_pos = positions["decay"]
    if "kind" not in decay_fields:
        raise SpecError("decay needs 'kind' (one of: " + ", ".join(DECAY_KINDS) + ")", decay_pos)
    decay = DecayDecl(
        kind=r.choice(decay_fields["kind"][1], "decay kind", DECAY_KINDS),
        gate=r.choice(decay_fields["gate"][1], "gate shape", GATE_SHAPES) if "gate" in decay_fields else "none",
        position=r.pos(decay_fields["kind"][1]),
    )
    positions["decay.kind"] = decay.position
    if "gate" in decay_fields:
        positions["decay.gate"] = r.pos(decay_fields["gate"][1])

    rec = r.mapping(required("recurrence"), "recurrence", ("state", "output"))
    for key in ("state", "output"):
        if key not in rec:
            raise SpecError(f"recurrence needs '{key}'", positions["recurrence"])
    state_update = r.expression(rec["state"][1], "recurrence.state")
    output = r.expression(rec["output"][1], "recurrence.output")

    normalization = (
        r.choice(top["normalization"][1], "normalization", NORMALIZATIONS) if "normalization" in top else "none"
    )
    feature_map = r.choice(top["feature_map"][1], "feature_map", FEATURE_MAPS) if "feature_map" in top else "identity"

    hint_values: dict[str, int] = {}
    if "hints" in top:
        for key, (_, value) in r.mapping(top["hints"][1], "hints", HINT_KEYS).items():
            number = r.integer(value, f"hints.{key}")
            if number < 16 or number & (number - 1):
                raise SpecError(f"hints.{key} must be a power of two >= 16, got {number}", r.pos(value))
            hint_values[key] = number
            positions[f"hints.{key}"] = r.pos(value)
    hints = Hints(**hint_values)

    layer = LayerDecl()
    if "layer" in top:
        values: dict = {"position": positions["layer"]}
        for key, (_, value) in r.mapping(top["layer"][1], "layer", LAYER_KEYS).items():
            if key == "gate_projection":
                values[key] = r.choice(value, "layer.gate_projection", GATE_PROJECTIONS)
            elif key == "output_norm":
                values[key] = r.choice(value, "layer.output_norm", OUTPUT_NORMS)
            elif key == "gate_rank":
                values[key] = r.integer(value, "layer.gate_rank")
                if values[key] < 1:
                    raise SpecError("layer.gate_rank must be >= 1", r.pos(value))
            elif key == "short_conv":
                values[key] = r.integer(value, "layer.short_conv")
                if values[key] < 0 or values[key] == 1:
                    raise SpecError("layer.short_conv must be 0 (none) or a kernel size >= 2", r.pos(value))
            else:  # gate_temperature, gate_bias: numbers
                if not isinstance(value, yaml.ScalarNode) or value.tag not in (
                        "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
                    raise SpecError(f"layer.{key} must be a number", r.pos(value))
                values[key] = float(yaml.safe_load(value.value))  # YAML's own spellings too (.inf, 1e3)
                if not math.isfinite(values[key]):
                    raise SpecError(f"layer.{key} must be finite", r.pos(value))
                if key == "gate_temperature" and not values[key] > 0:
                    raise SpecError("layer.gate_temperature must be > 0", r.pos(value))
        layer = LayerDecl(**values, given=tuple(k for k in values if k != "position"))

    return Spec(
        path=path_str, source=source, sha256=hashlib.sha256(source.encode()).hexdigest(), name=name,
        description=description, paper=paper, inputs=tuple(inputs), gates=tuple(gates), constants=tuple(constants),
        decay=decay, state_update=state_update, output=output, normalization=normalization, feature_map=feature_map,
        hints=hints, layer=layer, positions=positions,
    )
