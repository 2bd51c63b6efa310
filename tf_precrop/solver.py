"""The PreCrop geometric program and its integer rounding.

Continuous problem (docs/method.md § The program), one variable ``c_g`` per free channel group::

    maximize  sum_l log p_l          p_l = c_in(l) * c_out(l)   (depthwise: c_in)
    s.t.      MACs(c)   <= flops  * MACs(1)
              params(c) <= params * params(1)
              T(c)      <= latency * T(1)       (optional: T is a LatencyModel's predicted latency)
              min_g <= c_g <= max_ratio

All costs are posynomials of ``c``, so this is a geometric program. cvxpy solves it in its log-space convex
form (``x = log c``: linear objective, log-sum-exp constraints), which is the same problem ``gp=True``
builds but compiles an order of magnitude faster on DenseNet-sized graphs. Then integer widths (multiples
of ``round_to``): floor to the allowed widths, a greedy repair that shrinks until every budget holds, a greedy
fill that grows while the budgets allow (both by objective per unit of cost), and a local search that grows
one group and repairs the others when that raises the objective.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from tf_precrop import cost as cost_lib
from tf_precrop import latency_model as latency_model_lib
from tf_precrop.graph import registry
from tf_precrop.graph.walker import ModelGraph


LATENCY = latency_model_lib.LATENCY
#: Budget kind -> (argument name, what it counts), for error messages.
_BUDGET_NAMES = {registry.MACS: ("flops", "MACs"), registry.PARAMS: ("params", "params"),
                 LATENCY: ("latency", "predicted latency")}


class InfeasibleBudgetError(ValueError):
    """A budget below what the smallest allowed widths cost, or above what ``max_ratio`` can reach."""


@dataclasses.dataclass
class Solution:
    """Solver output: integer root widths and the continuous optimum they came from."""

    widths: dict  # root group -> new width (every root, free or not)
    continuous: dict  # free root -> continuous ratio c_g
    fixed_reasons: dict  # root -> why it keeps its width
    solve_seconds: float
    round_seconds: float


class Problem:
    """The compiled program of a model graph: free roots, costs as posynomials, objective weights."""

    def __init__(self, graph: ModelGraph, *, round_to: int = 1, max_ratio: float = 1.0, latency_model=None):
        self.graph = graph
        groups = graph.groups
        self.fixed_reasons: dict = {}
        free = []
        for root in groups.roots():
            reason = groups.pinned(root)
            dense = groups.dense_width(root)
            step = groups.step(root)
            if reason is None and round_to > 1 and dense < round_to:
                reason = f"narrower ({dense}) than round_to={round_to}"
            if reason is None and dense <= step and max_ratio <= 1:
                reason = "already at its minimum width"
            if reason is None:
                free.append(root)
            else:
                self.fixed_reasons[root] = reason
        self.variables = {root: i for i, root in enumerate(free)}
        self.roots = free
        self.dense = np.array([groups.dense_width(r) for r in free], float)
        self.step = np.array([_lcm(groups.step(r), round_to) for r in free], int)
        self.max_ratio = float(max_ratio)
        self.costs = {kind: cost_lib.posynomial(graph, kind, self.variables)
                      for kind in (registry.MACS, registry.PARAMS)}
        if latency_model is not None:
            self.costs[LATENCY] = latency_model.posynomial(graph, self.variables)
        self.dense_cost = {kind: p.value(np.zeros(len(free))) for kind, p in self.costs.items()}
        self.objective = cost_lib.objective_weights(graph, self.variables)
        self.allowed = [_allowed_widths(int(d), int(s), self.max_ratio) for d, s in zip(self.dense, self.step)]
        self.min_log = np.log(np.array([a[0] for a in self.allowed], float) / self.dense) if free else np.zeros(0)
        self.max_log = np.log(np.array([a[-1] for a in self.allowed], float) / self.dense) if free else np.zeros(0)

    def ratio_at(self, kind, log_c) -> float:
        return self.costs[kind].value(log_c) / self.dense_cost[kind]


def _lcm(a: int, b: int) -> int:
    return a * b // np.gcd(a, b)


def _allowed_widths(dense: int, step: int, max_ratio: float) -> np.ndarray:
    """Multiples of ``step`` up to ``max_ratio * dense``; the dense width itself is always allowed."""
    top = int(np.floor(max_ratio * dense + 1e-9))
    widths = set(range(step, top + 1, step)) | {dense}
    return np.array(sorted(widths), int)


def check_feasible(problem: Problem, budgets: dict) -> None:
    """Raises InfeasibleBudgetError when a budget is below the all-minimum cost."""
    for kind, budget in budgets.items():
        least = problem.ratio_at(kind, problem.min_log)
        if least > budget + 1e-12:
            name, noun = _BUDGET_NAMES[kind]
            raise InfeasibleBudgetError(
                f"Infeasible budget: with every group at its minimum width the model keeps {least:.4f} of its "
                f"dense {noun}. Received: {name}={budget:g}. Lower "
                "bound comes from fixed layers (inputs, outputs, ignored layers) and minimum widths "
                "(1 or round_to)."
            )


def solve_continuous(problem: Problem, budgets: dict) -> np.ndarray:
    """Solves the GP in log space with cvxpy; returns ``log c`` for the free roots."""
    import cvxpy as cp

    n = len(problem.roots)
    if n == 0:
        return np.zeros(0)
    x = cp.Variable(n)
    constraints = [x >= problem.min_log, x <= np.log(problem.max_ratio)]
    for kind, budget in budgets.items():
        posy = problem.costs[kind]
        exps = _sparse(posy)
        log_coef = np.log(posy.coef / problem.dense_cost[kind])
        constraints.append(cp.log_sum_exp(log_coef + exps @ x) <= np.log(budget))
    weights = problem.objective / max(problem.objective.sum(), 1e-12)  # CLARABEL stalls on large scales
    prob = cp.Problem(cp.Maximize(weights @ x), constraints)
    try:
        prob.solve(solver=cp.CLARABEL)
    except cp.SolverError:
        prob.solve(solver=cp.SCS, eps=1e-7)
    if x.value is None:
        raise RuntimeError(f"The geometric program did not solve (status: {prob.status}).")
    return np.clip(np.asarray(x.value, float), problem.min_log, np.log(problem.max_ratio))


def _sparse(posy: cost_lib.Posynomial):
    import scipy.sparse as sp

    return sp.csr_matrix((posy.powers, (posy.rows, posy.cols)), shape=(len(posy.coef), posy.num_vars))


class _Rounder:
    """Greedy integer search over the allowed widths of each free root."""

    def __init__(self, problem: Problem, budgets: dict):
        self.p = problem
        self.budgets = {k: b * problem.dense_cost[k] for k, b in budgets.items()}
        self.index = np.zeros(len(problem.roots), int)

    def widths(self):
        return np.array([a[i] for a, i in zip(self.p.allowed, self.index)], float)

    def log_c(self):
        return np.log(self.widths() / self.p.dense)

    def set_nearest(self, log_c):
        target = np.exp(log_c) * self.p.dense
        for j, allowed in enumerate(self.p.allowed):
            self.index[j] = int(np.argmin(np.abs(allowed - target[j])))

    def set_floor(self, log_c):
        """The largest allowed width at or below the continuous one (its smallest width if none is)."""
        target = np.exp(log_c) * self.p.dense * (1 + 1e-6)  # solver tolerance: 0.9999999 means 1
        for j, allowed in enumerate(self.p.allowed):
            self.index[j] = max(int(np.searchsorted(allowed, target[j], side="right")) - 1, 0)

    def _deltas(self, direction):
        """Cost change per budget and objective change when each root moves one allowed width."""
        widths = self.widths()
        nxt = self.index + direction
        valid = (nxt >= 0) & (nxt < np.array([len(a) for a in self.p.allowed]))
        new = np.array([a[min(max(i, 0), len(a) - 1)] for a, i in zip(self.p.allowed, nxt)], float)
        log_step = np.where(valid, np.log(new / widths), 0.0)
        log_c = self.log_c()
        deltas = {}
        for kind in self.budgets:
            posy = self.p.costs[kind]
            terms = posy.terms(log_c)
            # Each monomial scales by (w'/w) ** power for the one root that moves.
            contrib = terms[posy.rows] * np.expm1(posy.powers * log_step[posy.cols])
            deltas[kind] = np.bincount(posy.cols, contrib, minlength=len(widths))
        return valid, deltas, self.p.objective * log_step

    def totals(self):
        log_c = self.log_c()
        return {k: self.p.costs[k].value(log_c) for k in self.budgets}

    def repair(self, frozen: int | None = None) -> bool:
        """Shrinks, cheapest objective loss per unit of excess cost first, until every budget holds.

        Returns False when no root (other than ``frozen``) can shrink any further.
        """
        while True:
            totals = self.totals()
            over = {k: totals[k] - b for k, b in self.budgets.items() if totals[k] > b * (1 + 1e-12)}
            if not over:
                return True
            valid, deltas, dobj = self._deltas(-1)
            if frozen is not None:
                valid[frozen] = False
            saving = sum(-deltas[k] / self.budgets[k] for k in over)
            score = np.where(valid & (saving > 0), saving / np.maximum(-dobj, 1e-12), -np.inf)
            best = int(np.argmax(score)) if len(score) else 0
            if not len(score) or not np.isfinite(score[best]):
                return False
            self.index[best] -= 1

    def fill(self):
        """Grows, best objective gain per unit of cost first, while every budget still holds."""
        while True:
            totals = self.totals()
            valid, deltas, dobj = self._deltas(+1)
            fits = valid.copy()
            spend = np.zeros(len(valid))
            for k, b in self.budgets.items():
                fits &= totals[k] + deltas[k] <= b * (1 + 1e-12)
                spend += np.maximum(deltas[k], 0) / b
            score = np.where(fits & (dobj > 0), dobj / np.maximum(spend, 1e-15), -np.inf)
            best = int(np.argmax(score)) if len(score) else 0
            if not len(score) or not np.isfinite(score[best]):
                return
            self.index[best] += 1

    def objective(self) -> float:
        return float(self.p.objective @ self.log_c())

    def improve(self, max_rounds: int = 100, candidates: int = 12):
        """Local search: grow one root a step, shrink others back under the budgets, keep it if the
        objective rose. Fill alone stops where no single step fits; this trades width between groups
        (common with a coarse ``round_to``)."""
        for _ in range(max_rounds):
            base, saved = self.objective(), self.index.copy()
            valid, deltas, dobj = self._deltas(+1)
            spend = sum(np.maximum(deltas[k], 0) / b for k, b in self.budgets.items())
            score = np.where(valid & (dobj > 0), dobj / np.maximum(spend, 1e-15), -np.inf)
            accepted = False
            for grow in np.argsort(-score)[:candidates]:
                if not np.isfinite(score[grow]):
                    break
                self.index = saved.copy()
                self.index[grow] += 1
                if self.repair(frozen=grow) and self.objective() > base + 1e-9:
                    self.fill()
                    accepted = True
                    break
            if not accepted:
                self.index = saved
                return


def solve(graph: ModelGraph, budgets: dict, *, round_to: int = 1, max_ratio: float = 1.0,
          uniform: bool = False, latency_model=None) -> Solution:
    """Solves for integer widths of every channel group.

    Args:
        graph: the model graph.
        budgets: ``{"macs": ratio, "params": ratio, "latency": ratio}`` (any of them; latency needs
            ``latency_model``).
        round_to: widths of free groups become multiples of this (groups narrower than it stay dense).
        max_ratio: upper bound of every ratio (1 for PreCrop, > 1 lets groups grow: PreConfig).
        uniform: one ratio shared by every free group (the uniform width-scaling baseline) instead of the GP.
        latency_model: a ``tf_precrop.LatencyModel`` for the ``"latency"`` budget.

    Returns:
        A ``Solution``.
    """
    problem = Problem(graph, round_to=round_to, max_ratio=max_ratio, latency_model=latency_model)
    check_feasible(problem, budgets)
    start = time.perf_counter()
    rounder = _Rounder(problem, budgets)
    if uniform:
        log_c = _uniform(problem, rounder, budgets)
    else:
        log_c = solve_continuous(problem, budgets)
    solved = time.perf_counter()
    if not uniform:
        rounder.set_floor(log_c)
        if not rounder.repair():  # only needed when minimum widths sit above the continuous optimum
            raise InfeasibleBudgetError("No integer widths meet the budget.")
        rounder.fill()
        rounder.improve()
    widths = {root: graph.groups.dense_width(root) for root in graph.groups.roots()}
    for root, w in zip(problem.roots, rounder.widths()):
        widths[root] = int(w)
    return Solution(
        widths=widths,
        continuous={root: float(np.exp(v)) for root, v in zip(problem.roots, log_c)},
        fixed_reasons=dict(problem.fixed_reasons),
        solve_seconds=solved - start,
        round_seconds=time.perf_counter() - solved,
    )


def _uniform(problem: Problem, rounder: _Rounder, budgets: dict) -> np.ndarray:
    """Bisection on one shared ratio: the largest whose rounded widths meet every budget."""
    n = len(problem.roots)

    def fits(log_ratio):
        rounder.set_nearest(np.maximum(np.full(n, log_ratio), problem.min_log))
        totals = rounder.totals()
        return all(totals[k] <= b * (1 + 1e-12) for k, b in rounder.budgets.items())

    # All groups at their minimum fit (check_feasible), so the smallest minimum is a feasible start.
    lo, hi = float(np.min(problem.min_log, initial=0.0)), float(np.log(problem.max_ratio))
    if fits(hi):
        return np.full(n, hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if fits(mid):
            lo = mid
        else:
            hi = mid
    fits(lo)
    return np.maximum(np.full(n, lo), problem.min_log)
