"""What a sweep found, in order: the one source of "best" for the parent run, the report, the API
and a search.

A run has an *outcome* (how it ended: completed, reached_stop_loss, pruned, diverged, failed,
killed) and, where it has a result, a *verdict* against the optimum: at_optimum (its training
loss within tolerance of the closed-form optimum), slow (it finished, elsewhere), diverged, or
no_optimum (none is known for its problem). The sweep's *objective* (`tracking.objective`) says
what "best" means; by default (auto) runs at the optimum come first, the fewest epochs to reach it
first among them, then the rest by their excess loss; where no optimum is known, the final
validation loss (the training loss without a split). Runs without a result come last.

Runs on different problems (data, model, loss) are never ranked against each other: their losses
do not compare. Seeds are replicates: a *configuration* is a run's settings less its seeds, and
configurations rank by what their seeds did together (how many reached the optimum, their median
epochs there, their mean loss). Plain data in, plain data out.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from gradlab import safe

# Outcomes whose final losses are a result to rank ("converged": stores written before it was
# renamed reached_stop_loss).
RESULT = ("completed", "reached_stop_loss", "converged")
OUTCOMES = ("completed", "reached_stop_loss", "pruned", "diverged", "failed", "killed")
VERDICTS = ("at_optimum", "slow", "diverged", "no_optimum")
# Where runs without a result rank, after every run with one.
AFTER_RESULTS = {"pruned": 1, "diverged": 2}
OBJECTIVES = ("auto", "epochs_to_optimum", "excess", "train_loss", "val_loss", "best_val_loss")
TO_OPTIMUM = ("epochs_to_optimum", "excess")  # objectives that rank runs at the optimum first

# A run is at the optimum when its excess loss is within this of the optimal loss (relative, absolute).
OPTIMUM_RTOL, OPTIMUM_ATOL = 1e-3, 1e-9
NOTE_ROWS = 40  # rows of the parent's description, over all problems


def optimum_tolerance(optimal_loss: float) -> float:
    """How far above the optimal loss a run still counts as at the optimum."""
    return OPTIMUM_RTOL * abs(optimal_loss) + OPTIMUM_ATOL


def verdict(outcome: str, metrics: dict) -> str | None:
    """A run's fate against the optimum; None for a run that failed or was killed."""
    if outcome == "diverged":
        return "diverged"
    if outcome not in RESULT and outcome != "pruned":
        return None
    if "optimal_train_loss" not in metrics:
        return "no_optimum"
    return "at_optimum" if metrics.get("at_optimum") == 1.0 else "slow"


def rule(objective: str, metrics: dict) -> str:
    """The objective that applies to a run: auto resolved, and the optimum's objectives fall back
    to the training loss where no optimum is known."""
    known = "optimal_train_loss" in metrics
    if objective == "auto":
        return "epochs_to_optimum" if known else "val_loss"
    if objective in TO_OPTIMUM and not known:
        return "train_loss"
    return objective


def loss(name: str, metrics: dict) -> float:
    """The final loss an objective reads (nan where the run has none)."""
    train = metrics.get("final_train_loss", math.nan)
    if name == "val_loss":
        return metrics.get("final_val_loss", train)
    if name == "best_val_loss":
        return metrics.get("best_val_loss", train)
    if name == "excess":
        return metrics.get("excess_loss", math.nan)
    return train


def _epochs_there(metrics: dict) -> float:
    """Epochs to the optimum (a stream's runs, too noisy to say, count all their epochs)."""
    return metrics.get("epochs_to_optimum", metrics.get("epochs_run", math.inf))


def score(outcome: str, metrics: dict, objective: str, epochs: int) -> float:
    """One number, lower is better, in the ranking's order within a problem: what a search
    minimises and the runs table sorts by (metric `objective`). Where the optimum ranks: the
    epochs to reach it for a run at it; epochs + 1 + log10(excess / tolerance) for one that is
    not (more than any run at it, growing with the excess); +inf without a result."""
    if outcome not in RESULT:
        return math.inf
    r = rule(objective, metrics)
    if r in TO_OPTIMUM:
        if metrics.get("at_optimum") == 1.0:
            return _epochs_there(metrics)
        tolerance = optimum_tolerance(metrics["optimal_train_loss"])
        excess = metrics.get("excess_loss", math.inf)
        return epochs + 1 + math.log10(max(excess, tolerance) / tolerance)
    value = loss(r, metrics)
    return value if math.isfinite(value) else math.inf


def problem(params: dict) -> str:
    """What a run's losses are losses of: its data, model and loss (runs of one problem compare).
    A user's own model is the code its model.target names (each test function its own problem)."""
    target = params.get("model.target")
    named = {**params, "model.name": str(target).rpartition(":")[2]} if target not in (None, "None", "") else params
    return " · ".join(str(named[k]) for k in ("data.name", "model.name", "train.loss") if named.get(k) not in (None, "none", ""))


def is_seed(key: str) -> bool:
    """A key whose values replicate a configuration rather than make another (train.seed,
    data.seed, data.split_seed)."""
    return key.rpartition(".")[2].endswith("seed")


# Params that do not make a configuration: seeds (replicates), where and how a run is recorded.
def _settings(params: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in params.items()
                        if not is_seed(k) and not k.startswith("tracking.") and k != "train.progress"))


@dataclass
class Entry:
    """A run as the ranking reads it."""

    run_id: str
    name: str
    outcome: str
    problem: str
    metrics: dict
    objective: str  # the sweep's objective (tracking.objective)
    epochs: int  # the epochs it was given (train.epochs)
    settings: tuple = ()  # its params less seeds: runs with equal settings are one configuration's seeds
    seed: str = ""  # its seeds, "train.seed=3": runs of two configurations pair by them
    values: dict = field(default_factory=dict)  # the swept keys' values, as labels (the map's axes)

    @property
    def verdict(self) -> str | None:
        return verdict(self.outcome, self.metrics)

    @property
    def rule(self) -> str:
        return rule(self.objective, self.metrics)

    @property
    def has_result(self) -> bool:
        return self.outcome in RESULT

    @property
    def score(self) -> float:
        return score(self.outcome, self.metrics, self.objective, self.epochs)

    @property
    def label(self) -> str:
        """What tells the run apart in its sweep: its name's lead (describe.run_name)."""
        return self.name.split(" · ")[0]


def entry(run_id: str, name: str, outcome: str, params: dict, metrics: dict, varied: list[str] | None = None,
          overrides: str = "") -> Entry:
    """A run as the ranking reads it, from its params (the flattened config), final metrics and
    its job's overrides (the swept keys' values, as the sweep wrote them)."""
    objective = str(params.get("tracking.objective") or "auto")
    epochs = int(params.get("train.epochs") or metrics.get("epochs_run") or 0)
    given = dict(o.partition("=")[::2] for o in overrides.split() if "=" in o)
    keys = [k for k in (varied or []) if not is_seed(k)]
    values = {k: axis_label(k, given.get(k, params.get(k)), params) for k in keys}
    seed = " ".join(f"{k}={params[k]}" for k in sorted(params) if is_seed(k) and not k.startswith("tracking."))
    return Entry(run_id, name, outcome, problem(params), dict(metrics), objective if objective in OBJECTIVES else "auto",
                 epochs, _settings(params), seed, values)


def axis_label(key: str, value, params: dict) -> str:
    """How a swept value reads on an axis: `adam`, `1e-3`, `raw`, `×0.1`, `batch_size=16`."""
    if value is None:
        return "–"
    if key == "data.scaling":
        return {"none": "raw", "factor": f"×{float(params.get('data.scale_factor', 1.0)):g}"}.get(str(value), str(value))
    if "." not in key:  # a config group's option (optimizer=adam)
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{key.rpartition('.')[2]}={value}"
    return f"{number:g}" if key == "optimizer.lr" else f"{key.rpartition('.')[2]}={number:g}"


# ----------------------------------------------------------------------------- runs
def key(e: Entry) -> tuple:
    """A run's place within its problem: runs with a result first, in the objective's order;
    then pruned, diverged, failed and killed runs."""
    if not e.has_result:
        return (1 + AFTER_RESULTS.get(e.outcome, 2), 0, 0.0, e.name)
    r = e.rule
    if r in TO_OPTIMUM:
        if e.metrics.get("at_optimum") == 1.0:
            return (0, 0, _epochs_there(e.metrics), e.name)
        return (0, 1, e.metrics.get("excess_loss", math.inf), e.name)
    value = loss(r, e.metrics)
    return (0, 0, value if math.isfinite(value) else math.inf, e.name)


def ranked(entries: list[Entry]) -> dict[str, list[Entry]]:
    """problem -> its runs, best first; problems in order of their names."""
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.problem, []).append(e)
    return {p: sorted(groups[p], key=key) for p in sorted(groups)}


def best(entries: list[Entry]) -> dict[str, Entry]:
    """problem -> its best run: the best configuration's best seed."""
    return {p: group[0].runs[0] for p, group in configurations(entries).items() if group and group[0].runs[0].has_result}


# --------------------------------------------------------------------- configurations
@dataclass
class Configuration:
    """One configuration and its seeds (a single run where seeds do not vary)."""

    label: str
    problem: str
    runs: list[Entry]  # best first

    @property
    def n(self) -> int:
        return len(self.runs)

    def count(self, verdict_name: str) -> int:
        return sum(r.verdict == verdict_name for r in self.runs)

    @property
    def without_result(self) -> int:
        return sum(not r.has_result for r in self.runs)

    @property
    def rule(self) -> str:
        return self.runs[0].rule

    @property
    def values(self) -> dict:
        return self.runs[0].values

    def epochs_to_optimum(self) -> float:
        """The median over its seeds at the optimum (nan if none got there)."""
        there = [_epochs_there(r.metrics) for r in self.runs if r.verdict == "at_optimum"]
        return statistics.median(there) if there else math.nan

    def losses(self) -> list[float]:
        """The objective's loss of each seed with a result (the excess where the optimum ranks)."""
        name = "excess" if self.rule in TO_OPTIMUM else self.rule
        return [v for r in self.runs if r.has_result and math.isfinite(v := loss(name, r.metrics))]

    def mean(self) -> float:
        values = self.losses()
        return statistics.fmean(values) if values else math.nan

    def spread(self) -> float:
        """The standard deviation over seeds (nan for fewer than two)."""
        values = self.losses()
        return statistics.stdev(values) if len(values) > 1 else math.nan

    def interval(self) -> tuple[float, float]:
        """A 95% interval of the mean over seeds (Student's t; nan for fewer than two)."""
        values = self.losses()
        if len(values) < 2:
            return (math.nan, math.nan)
        from scipy.stats import t  # only where seeds replicate: scipy.stats costs a second to import

        half = t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
        return (statistics.fmean(values) - half, statistics.fmean(values) + half)

    def verdict(self) -> str:
        """The cell's verdict: one shared by every seed, else `mixed`; runs without a verdict
        (failed, killed) leave a cell `failed` only if none has one."""
        kinds = {r.verdict for r in self.runs} - {None}
        if not kinds:
            return "failed"
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def key(self) -> tuple:
        """A configuration's place within its problem (the objective's order, over its seeds)."""
        n = self.n
        if self.rule in TO_OPTIMUM:
            return (-self.count("at_optimum") / n, self.without_result / n, _nan_last(self.epochs_to_optimum()),
                    _nan_last(self.mean()), self.label)
        return (self.without_result / n, _nan_last(self.mean()), self.label)


def _nan_last(v: float) -> float:
    return math.inf if math.isnan(v) else v


def _configuration_label(runs: list[Entry]) -> str:
    """Its runs' name lead less the seeds' labels (`adam lr=0.01 seed=3` -> `adam lr=0.01`)."""
    words = [w for w in runs[0].label.split() if not is_seed(w.partition("=")[0])]
    return " ".join(words) or runs[0].label


def configurations(entries: list[Entry]) -> dict[str, list[Configuration]]:
    """problem -> its configurations, best first; a configuration's runs (its seeds) best first."""
    out = {}
    for p, runs in ranked(entries).items():
        by_settings: dict[tuple, list[Entry]] = {}
        for r in runs:
            by_settings.setdefault(r.settings, []).append(r)
        out[p] = sorted((Configuration(_configuration_label(rs), p, rs) for rs in by_settings.values()),
                        key=Configuration.key)
    return out


def replicated(entries: list[Entry]) -> bool:
    """Whether seeds replicate configurations here (some configuration ran more than once)."""
    return any(c.n > 1 for group in configurations(entries).values() for c in group)


# ------------------------------------------------------------------------ significance
ALPHA = 0.05


@dataclass
class Comparison:
    """The best configuration of a problem against its runner-up, paired by seed."""

    problem: str
    best: str
    runner_up: str
    pairs: int
    p: float  # Wilcoxon signed-rank, two-sided (nan where every pair ties)
    p_holm: float  # adjusted over every problem's comparison (Holm)

    def sentence(self, comparisons: int) -> str:
        where = f"{self.problem}: " if self.problem else ""
        holm = f"Holm-adjusted over {comparisons} comparisons" if comparisons > 1 else "one comparison, no adjustment"
        if math.isnan(self.p):
            return f"{where}`{self.best}` and the runner-up `{self.runner_up}` tie on every one of {self.pairs} seeds."
        beyond = self.p_holm < ALPHA
        small = "" if beyond or self.pairs >= 6 else f" (with {self.pairs} seeds no two-sided test can reach p < {ALPHA})"
        return (f"{where}`{self.best}` {'beats' if beyond else 'is not distinguishable from'} the runner-up "
                f"`{self.runner_up}` {'beyond' if beyond else 'within'} seed noise: Wilcoxon signed-rank over "
                f"{self.pairs} paired seeds, p = {self.p:.3g}, {self.p_holm:.3g} {holm}{small}.")


def significance(entries: list[Entry]) -> list[Comparison]:
    """Per problem whose best configuration and runner-up share two or more seeds: is the best
    better beyond seed noise? A paired Wilcoxon signed-rank test on their scores (a run without a
    result scores worst), p-values adjusted over the problems by Holm's step-down method."""
    found = []
    for p, group in configurations(entries).items():
        if len(group) < 2:
            continue
        first, second = ({r.seed: r.score for r in c.runs} for c in group[:2])
        seeds = sorted(set(first) & set(second))
        if len(seeds) < 2:
            continue
        worst = max([v for s in seeds for v in (first[s], second[s]) if math.isfinite(v)], default=1.0)
        cap = abs(worst) * 10 + 1  # +inf (no result) as worse than any result, finite for the test
        diffs = [min(first[s], cap) - min(second[s], cap) for s in seeds]
        if all(d == 0 for d in diffs):
            pvalue = math.nan
        else:
            from scipy.stats import wilcoxon

            pvalue = float(wilcoxon(diffs, zero_method="zsplit").pvalue)
        found.append(Comparison(p, group[0].label, group[1].label, len(seeds), pvalue, pvalue))
    tested = sorted((c for c in found if not math.isnan(c.p)), key=lambda c: c.p)
    running = 0.0
    for i, c in enumerate(tested):  # Holm: the i-th smallest p times (m - i), kept monotone, at most 1
        running = max(running, min(1.0, c.p * (len(tested) - i)))
        c.p_holm = running
    return found


# ------------------------------------------------------------------------------ tables
def _number(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def describe_objective(entries: list[Entry]) -> str:
    """The ranking's rule in words."""
    objective = entries[0].objective if entries else "auto"
    rules = {e.rule for e in entries}
    words = {"epochs_to_optimum": "runs at the optimum first (training loss within 1e-3 of the closed-form optimum), "
                                  "the fewest epochs to reach it first, then the rest by their excess loss",
             "excess": "by the excess training loss over the closed-form optimum (runs at the optimum tie, the "
                       "fewest epochs to reach it first)",
             "train_loss": "by the final training loss", "val_loss": "by the final validation loss (the training "
                                                                     "loss without a split)",
             "best_val_loss": "by the lowest validation loss seen"}
    said = "; where no optimum is known, ".join(words[r] for r in sorted(rules, key=list(words).index))
    return f"Ranked {said} (tracking.objective={objective}); runs without a result last."


def _row(rank: int, c: Configuration, seeds: bool, optimum: bool) -> list[str]:
    v = c.verdict()
    verdict_cell = v.replace("_", " ") if not seeds else ", ".join(
        f"{c.count(k)}/{c.n} {k.replace('_', ' ')}" for k in VERDICTS if c.count(k)) or f"{c.n}/{c.n} failed"
    cells = [str(rank), c.label.replace("|", "/"), verdict_cell]
    if optimum:
        cells.append(_number(c.epochs_to_optimum()))
    value = c.mean()
    cells.append(_number(value) + (f" ± {_number(c.spread())}" if seeds and not math.isnan(c.spread()) else ""))
    return cells


def table(group: list[Configuration], limit: int = 20) -> str:
    """A markdown table of a problem's best `limit` configurations."""
    seeds = any(c.n > 1 for c in group)
    optimum = group[0].rule in TO_OPTIMUM
    what = {"val_loss": "final val loss", "train_loss": "final train loss", "best_val_loss": "best val loss"}
    head = ["rank", "configuration" if seeds else "run", f"verdict (of {group[0].n} seeds)" if seeds else "verdict",
            *(["epochs to optimum" + (" (median)" if seeds else "")] if optimum else []),
            ("excess loss" if optimum else what.get(group[0].rule, "loss")) + (" (mean ± sd)" if seeds else "")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_row(i, c, seeds, optimum)) + " |" for i, c in enumerate(group[:limit], 1)]
    if len(group) > limit:
        lines.append(f"\n… and {len(group) - limit} more: the whole ranking is the artifact `ranking.csv` (`ranking.html`)")
    return "\n".join(lines)


def counts(entries: list[Entry]) -> dict[str, int]:
    """How the runs ended and stood: {outcome or verdict: runs}, the ones that occur."""
    out = {f"{k}": sum(e.outcome == k or (k == "reached_stop_loss" and e.outcome == "converged") for e in entries)
           for k in OUTCOMES}
    out.update({k: sum(e.verdict == k for e in entries) for k in ("at_optimum", "slow")})
    return {k: v for k, v in out.items() if v}


def note_rows(problems: int) -> int:
    """How many configurations of each problem the parent's description lists (MLflow keeps 8000
    characters of a tag)."""
    return max(3, NOTE_ROWS // max(1, problems))


def note(sweep: str, varied: list[str], jobs: int, entries: list[Entry], comparisons: list[Comparison] | None = None,
         map_path: str | None = None) -> str:
    """The parent run's description: what the sweep varied, how its runs ended, the convergence
    map, its best configurations per problem and whether the best beats the runner-up."""
    c = counts(entries)
    fates = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in c.items() if k not in ("at_optimum", "slow"))
    verdicts = ", ".join(f"{c[k]} {k.replace('_', ' ')}" for k in ("at_optimum", "slow") if k in c)
    parts = [f"**Sweep `{sweep}`** varied {', '.join(f'`{k}`' for k in varied) or 'nothing'}: {jobs} jobs, "
             f"{fates or 'none recorded'}" + (f" ({verdicts})" if verdicts else "") + "."]
    if map_path:  # first: the page shows the start of a description before "Show more"
        parts.append(f"![convergence map: each configuration's verdict]({map_path})")
    parts.append(describe_objective(entries))
    groups = configurations(entries)
    rows = note_rows(len(groups))
    for name, group in groups.items():
        parts.append(f"**{name or 'runs'}**, best first:\n\n{table(group, rows)}")
    for comparison in comparisons or []:
        parts.append(comparison.sentence(len(comparisons)))
    parts.append("The whole ranking, diverged and failed runs included: artifacts `ranking.csv` and `ranking.html`.")
    return "\n\n".join(parts)


def rows(entries: list[Entry]) -> list[dict]:
    """The whole ranking as records (ranking.csv): a row per run, by problem, its configuration's
    rank and its own within the problem."""
    out = []
    for p, group in configurations(entries).items():
        position = {id(r): i for i, r in enumerate(ranked([r for c in group for r in c.runs])[p], 1)}
        for rank, c in enumerate(group, 1):
            for r in c.runs:
                m = r.metrics
                out.append({"problem": p, "config_rank": rank, "rank": position[id(r)], "configuration": c.label,
                            "run": r.label, "run_id": r.run_id, "outcome": r.outcome, "verdict": r.verdict or "",
                            "epochs_to_optimum": m.get("epochs_to_optimum", math.nan),
                            "excess_loss": m.get("excess_loss", math.nan),
                            "final_train_loss": m.get("final_train_loss", math.nan),
                            "final_val_loss": m.get("final_val_loss", math.nan),
                            "objective": r.score if r.has_result else math.nan, "seed": r.seed, **r.values})
    return out


def fate(outcome: str, metrics: dict, objective: str, epochs: int) -> tuple[dict[str, str], dict[str, float]]:
    """What a run's end records of its fate, so that the UI can filter, sort and plot by it:
    params `outcome` and `verdict` (columns), and metrics `outcome_code`, `verdict_code` (their
    positions in OUTCOMES and VERDICTS, for a chart's axis) and `objective` (`score`)."""
    params, codes = {"outcome": outcome}, {"outcome_code": float(OUTCOMES.index(outcome))}
    v = verdict(outcome, metrics)
    if v is not None:
        params["verdict"], codes["verdict_code"] = v, float(VERDICTS.index(v))
    value = score(outcome, metrics, objective, epochs)
    if math.isfinite(value):
        codes["objective"] = value
    return params, codes


def csv_text(records: list[dict]) -> str:
    """Records as CSV, every column any record has; each text cell through safe.cell (names come
    from users' configs and a shared store)."""
    import csv
    import io

    columns = list(dict.fromkeys(k for r in records for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else safe.cell(v) for k, v in r.items()})
    return out.getvalue()
