"""A sweep's grid: the swept settings (axes), the fixed ones and the seeds, from flags or a TOML grid file, and
the checked config of every run it names.

    grid = grid_from(Path("configs/sweeps/power_fraction.toml"), {"lr": "0.001,0.003"}, seeds=None, threshold=None)
    runs = configs(grid)     # (point name, run directory name, config), each checked before anything trains

A swept setting is any config flag given several values: a comma list (``add,div``) or an inclusive numeric
range ``lo:hi:step`` (``0.2:0.6:0.1``), or a ``[grid]`` entry of a TOML grid file.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grokrun.config import parse_seeds, resolve
from grokrun.errors import UserError

MAX_RUNS = 100_000


@dataclass
class Axis:
    key: str  # the override key: "filter.name", "*.train_frac" (the chosen task's option)
    name: str  # as on the command line: "filter", "train-frac"
    values: list[Any]

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "values": self.values}

    def text(self, value: Any) -> str:
        """A value as run directories name it: short (0.001), or in full where two of the axis's values would
        print alike (0.0012345671 and 0.0012345672), so that every point has a name of its own."""
        short = [value_text(v) for v in self.values]
        return repr(value) if len(set(short)) < len(short) and isinstance(value, float) else value_text(value)


@dataclass
class Grid:
    fixed: dict[str, Any]  # override key -> value, for every run
    axes: list[Axis]
    seeds: list[int] = field(default_factory=lambda: [0])
    threshold: float = 0.99

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the axes' values, the first axis varying slowest."""
        return [dict(zip((a.key for a in self.axes), combo)) for combo in itertools.product(*(a.values for a in self.axes))]

    def point_name(self, point: dict[str, Any]) -> str:
        """"op=add_train-frac=0.2_filter=ema": the run directories' stem, and the point's label."""
        return "_".join(f"{a.name}={a.text(point[a.key])}" for a in self.axes) or "point"


def value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


# --- reading a grid ------------------------------------------------------------------------------------------

def parse_values(text: str, kind: type, flag: str) -> list[Any]:
    """"add,div" -> ["add", "div"]; "0.2:0.6:0.1" -> [0.2, 0.3, 0.4, 0.5, 0.6] (inclusive, rounded to 10
    digits so 0.1 steps stay 0.3 and not 0.30000000000000004); "1,4:6:1" -> [1, 4, 5, 6]."""
    values: list[Any] = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            raise UserError(f"--{flag}: an empty value in {text!r}")
        if ":" in item and kind in (int, float):
            values += _range(item, kind, flag)
        else:
            values.append(_convert(item, kind, flag))
    return list(dict.fromkeys(values))


def _range(item: str, kind: type, flag: str) -> list[Any]:
    parts = item.split(":")
    if len(parts) != 3:
        raise UserError(f"--{flag}: a range is lo:hi:step, such as 0.2:0.6:0.1, got {item!r}")
    lo, hi, step = (_convert(p, kind, flag) for p in parts)
    if not step > 0:
        raise UserError(f"--{flag}: a range's step must be > 0, got {item!r}")
    if hi < lo:
        raise UserError(f"--{flag}: the range {item!r} is empty (it runs from {lo} up to {hi})")
    count = math.floor((hi - lo) / step + 1e-9) + 1
    if count > MAX_RUNS:
        raise UserError(f"--{flag}: the range {item!r} has {count:,} values; at most {MAX_RUNS:,}")
    return [lo + i * step if kind is int else round(lo + i * step, 10) for i in range(count)]


def _convert(text: str, kind: type, flag: str) -> Any:
    what = {int: "an integer", float: "a finite number", bool: "true or false"}.get(kind, "valid")
    try:
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        value = kind(text)
        if kind is float and not math.isfinite(value):
            raise ValueError  # (nan and inf are no setting's value, nor a range's end or step)
        return value
    except ValueError:
        raise UserError(f"--{flag}: {text!r} is not {what}") from None


def read_grid_file(path: Path, flags_by_key: dict[str, Any]) -> Grid:
    """A TOML grid: ``seeds`` and ``threshold`` at the top, ``[fixed]`` settings and ``[grid]`` axes, by config
    key (``[fixed] task = "modular"``, ``[grid] "modular.train_frac" = "0.2:0.6:0.1"`` or a list)."""
    from grokrun.results import flatten

    if not path.is_file():
        raise UserError(f"grid file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except ValueError as e:  # TOML errors, undecodable bytes, an integer of over 4,300 digits
        why = ("an integer of over 4,300 digits, which no setting takes" if "integer string conversion" in str(e)
               else " ".join(str(e).split())[:200])
        raise UserError(f"cannot parse {path}: {why}") from None
    unknown = set(data) - {"seeds", "threshold", "fixed", "grid"}
    if unknown:
        raise UserError(f"{path}: unknown entry {sorted(unknown)[0]!r}; a grid file has seeds, threshold, [fixed] "
                        "and [grid]")
    for table in ("fixed", "grid"):
        if not isinstance(data.get(table, {}), dict):
            raise UserError(f"{path}: {table} must be a table ([{table}] with one setting a line), "
                            f"got {data[table]!r}")
    fixed = {_key(k): v for k, v in flatten(data.get("fixed", {})).items()}
    axes = []
    for key, values in flatten(data.get("grid", {})).items():
        key = _key(key)
        flag = flags_by_key.get(key)
        if flag is None:
            raise UserError(f"{path}: unknown setting {key!r} in [grid]")
        if not isinstance(values, (str, list)) or (isinstance(values, list) and not all(
                isinstance(v, (str, int, float, bool)) for v in values)):
            raise UserError(f"{path}: [grid] {key} must be a list of values or a range string such as "
                            f"\"0.2:0.6:0.1\", got {values!r}")
        if isinstance(values, list):
            if not values:
                raise UserError(f"{path}: [grid] {key} is an empty list")
            parsed = [v for item in values for v in (parse_values(item, flag.type, flag.name)
                                                      if isinstance(item, str) and flag.type is not str else [item])]
        else:
            parsed = parse_values(values, flag.type, flag.name)
        axes.append(Axis(key, flag.name, list(dict.fromkeys(parsed))))
    seeds = parse_seeds(str(data.get("seeds", "0")))
    threshold = data.get("threshold", 0.99)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise UserError(f"{path}: threshold must be in (0, 1], got {threshold!r}")
    return Grid(fixed, axes, seeds, float(threshold))


def _key(key: str) -> str:
    """A task option as the command line keys it ("modular.p" -> "*.p"), so that a flag replaces it."""
    from grokrun.config import task_sections

    section, _, name = key.partition(".")
    return f"*.{name}" if section in task_sections() and name else key


def configs(grid: Grid) -> list[tuple[str, str, Any]]:
    """(point name, run directory name, config) of every run, each checked: UserError, naming the point, on the
    first a setting refuses; nothing is trained or written before all are checked."""
    size = math.prod(len(a.values) for a in grid.axes) * len(grid.seeds)  # (counted before the points are built)
    if size > MAX_RUNS:
        raise UserError(f"the grid has {size:,} runs; at most {MAX_RUNS:,}")
    points = grid.points()
    runs = []
    for point in points:
        name = grid.point_name(point)
        try:
            cfg = resolve(None, {**grid.fixed, **point})
        except UserError as e:
            raise UserError(f"{name.replace('_', ' ')}: {e}") from None
        for seed in grid.seeds:
            runs.append((name, f"{name}-seed{seed}", _with_seed(cfg, seed)))
    tasks = {cfg.task for _, _, cfg in runs}
    if len(tasks) > 1:
        raise UserError(f"a sweep trains one task; the grid names {', '.join(sorted(tasks))}")
    return runs


def _with_seed(cfg, seed: int):
    import dataclasses

    return dataclasses.replace(cfg, seed=seed)


def grid_from(grid_file: Path | None, values: dict[str, str | None], seeds: list[int] | None,
              threshold: float | None, plugins: list[str] = ()) -> Grid:
    """The grid a ``grokrun sweep`` command line names: the file's (if any), then each flag given (by Python
    name, as text): one value fixes the setting, several make an axis. The command line wins over the file."""
    from grokrun.flags import flags

    by_key, by_name = {f.key: f for f in flags()}, {f.name: f for f in flags()}
    grid = read_grid_file(grid_file, by_key) if grid_file is not None else Grid({}, [])
    for name, text in values.items():
        if text is None:
            continue
        flag = by_name[name.replace("_", "-")]
        grid.axes = [a for a in grid.axes if a.key != flag.key]
        grid.fixed.pop(flag.key, None)
        parsed = [text] if flag.type is bool else parse_values(text, flag.type, flag.name)
        if len(parsed) == 1:
            grid.fixed[flag.key] = parsed[0]
        else:
            grid.axes.append(Axis(flag.key, flag.name, parsed))
    if plugins:
        grid.fixed["plugins"] = [*grid.fixed.get("plugins", []), *plugins]
    if seeds is not None:
        grid.seeds = seeds
    if threshold is not None:
        grid.threshold = threshold
    return grid
