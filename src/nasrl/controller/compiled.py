"""The controller's sampling walk as one compiled loop (Numba), for the asks of long runs.

A 20-layer ``conv`` architecture is 80 decisions and 190 skip flags. Walked in PyTorch, each
decision costs two ``lstm_cell`` calls, a head and a draw: some ten kernel calls of 5-65 us
each, almost all of it per-call overhead at the controller's size (2 x 35 units, 8-16
rows), so one batched walk costs 30-45 ms however few rows it draws. The same arithmetic
in one compiled loop costs what the arithmetic costs: ~20k multiply-adds per row and
decision.

The draws are *inverse-CDF* draws from uniforms the run's torch generator gives, one per
token (:func:`draw_uniforms`): the token is the first whose cumulative probability exceeds
``u``; a skip flag is present iff ``u`` falls past P(absent). The PyTorch walk
(:func:`torch_walk`, which :func:`sample_by_uniforms` falls back to) draws from the same
uniforms the same way, so both give the same architectures up to float rounding (a uniform
within ~1e-7 of a boundary; tested). The compiled walk is used only where the PyTorch walk
would do the same thing: no feasible set, no tiers (those keep the PyTorch walk, which
handles them), and Numba imports and compiles.

Everything here runs without gradient: an ask needs the tokens and their log-probability,
and the update scores the tokens again (with gradient) in PyTorch.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor, nn

from nasrl.controller.lstm import Controller, ControllerConfig, _weights
from nasrl.spaces.base import Categorical, SearchSpace

_KERNEL: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
_MISSING = False  # Numba failed to import or compile: the PyTorch walk draws instead


class Plan(NamedTuple):
    """The walk of one space, as arrays: per decision its type (0 categorical, 1 anchor),
    kind (index into the packed heads) and anchor layer."""

    types: np.ndarray
    kinds: np.ndarray
    layers: np.ndarray


def plan_of(controller: Controller) -> Plan:
    names = list(controller.kinds)
    types, kinds, layers = [], [], []
    for d in controller.space.decisions:
        categorical = isinstance(d, Categorical)
        types.append(0 if categorical else 1)
        kinds.append(names.index(d.kind) if categorical else 0)
        layers.append(0 if categorical else d.num_tokens)
    return Plan(np.array(types, np.int64), np.array(kinds, np.int64), np.array(layers, np.int64))


def _f64(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float64).numpy())


def pack(controller: Controller) -> tuple[Any, ...]:
    """The controller's weights as float64 arrays laid out for the kernel: input-major
    (in, out) matrices, so the inner loops run over contiguous outputs."""
    hidden = controller.config.hidden_size
    cells = [_weights(cell) for cell in controller.cells]
    w_ih = np.stack([_f64(w.T) for w, _, _, _ in cells])
    w_hh = np.stack([_f64(w.T) for _, w, _, _ in cells])
    b_ih = np.stack([_f64(b) for _, _, b, _ in cells])
    b_hh = np.stack([_f64(b) for _, _, _, b in cells])
    names = list(controller.kinds)
    widest = max(controller.kinds.values(), default=1)
    head_w = np.zeros((max(len(names), 1), hidden, widest))
    head_b = np.zeros((max(len(names), 1), widest))
    emb = np.zeros((max(len(names), 1), widest, hidden))
    options = np.zeros(max(len(names), 1), np.int64)
    for i, kind in enumerate(names):
        k = controller.kinds[kind]
        head, embedding = controller.heads[kind], controller.embeddings[kind]
        assert isinstance(head, nn.Linear) and isinstance(embedding, nn.Embedding)
        head_w[i, :, :k] = _f64(head.weight.T)
        head_b[i, :k] = _f64(head.bias)
        emb[i, :k] = _f64(embedding.weight)
        options[i] = k
    if controller.has_anchors:
        w_prev, w_curr = _f64(controller.w_prev.weight.T), _f64(controller.w_curr.weight.T)
        v = _f64(controller.v.weight[0])
    else:
        w_prev = w_curr = np.zeros((hidden, hidden))
        v = np.zeros(hidden)
    cfg = controller.config
    tanh_c = math.nan if cfg.tanh_constant is None else float(cfg.tanh_constant)
    return (_f64(controller.go[0]), w_ih, w_hh, b_ih, b_hh, cfg.cell == "gru", head_w, head_b,
            options, emb, w_prev, w_curr, v, float(cfg.temperature), tanh_c)


def draw_uniforms(n: int, num_tokens: int, generator: torch.Generator | None) -> np.ndarray:
    """One uniform per token of every row: all the randomness of a walk, in one call."""
    return torch.rand(n, num_tokens, generator=generator, dtype=torch.float64).numpy()


def available() -> bool:
    """Whether the compiled kernel is built: compiled (or loaded from Numba's cache) on the
    first call. Without Numba, or where it cannot compile the loop, the PyTorch walk draws
    the same rows (a warning says why); a failure is not retried on every ask."""
    global _MISSING
    if _KERNEL is None and not _MISSING:
        try:
            _build()
        except Exception as exc:  # any failure: the PyTorch walk draws the same rows
            _MISSING = True
            if not isinstance(exc, ImportError):
                warnings.warn(f"nasrl: the compiled sampling walk is unavailable ({exc}); the "
                              "PyTorch walk draws the same architectures, slower", stacklevel=2)
    return not _MISSING


def warm_up() -> float:
    """Build the kernel now rather than in the first ask; returns the seconds it took
    (~5-10 s the first time after an install, well under one from Numba's cache)."""
    start = time.perf_counter()
    available()
    return time.perf_counter() - start


def compiled_walk(controller: Controller, uniforms: np.ndarray) -> tuple[Tensor, Tensor]:
    """The tokens (n, T) and log P (n,) of the rows the uniforms draw (compiled)."""
    plan = plan_of(controller)
    tokens, logp = _kernel()(plan.types, plan.kinds, plan.layers, uniforms, *pack(controller))
    return torch.from_numpy(tokens), torch.from_numpy(logp)


def sample_by_uniforms(controller: Controller, n: int, generator: torch.Generator | None
                       ) -> tuple[Tensor, Tensor]:
    """``n`` architectures drawn from the policy by inverse CDF: tokens (n, T) and log P
    (n,). Compiled where it can be; else the PyTorch walk, from the same uniforms
    (constrained decoding and tiers included)."""
    uniforms = draw_uniforms(n, controller.space.num_tokens, generator)
    plain = controller.feasible is None and controller._tiers is None
    if plain and controller.space.num_tokens > 0 and available():
        return compiled_walk(controller, uniforms)
    return torch_walk(controller, uniforms)


@torch.no_grad()
def torch_walk(controller: Controller, uniforms: np.ndarray) -> tuple[Tensor, Tensor]:
    """The PyTorch walk drawing by inverse CDF from ``uniforms`` (n, T)."""
    u = torch.from_numpy(uniforms)

    def pick(pos: int, logp: Tensor) -> Tensor:
        cum = logp.double().exp().cumsum(1)
        below = u[:, pos : pos + 1] * cum[:, -1:] >= cum  # tokens whose CDF u has passed
        return below.sum(1).clamp(max=logp.shape[1] - 1)

    def pick_flags(pos: int, pair: Tensor) -> Tensor:
        probs = pair.double().exp()
        flags = u[:, pos : pos + pair.shape[1]] * probs.sum(2) >= probs[:, :, 0]
        return flags.long()

    out = controller.sample_with(u.shape[0], pick, pick_flags)
    return out.tokens, out.log_prob.double()


def _kernel() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    if not available() or _KERNEL is None:
        raise RuntimeError("the compiled sampling walk is unavailable (see available())")
    return _KERNEL


def _build() -> None:
    """Compile the kernel (or load it from the cache) on a one-decision controller: every
    call has the same argument types, so this is the only compilation."""
    global _KERNEL
    for name in ("_exp", "_lstm_update", "_gru_update", "_project", "_squash"):  # what _walk calls
        globals()[name] = _jit(globals()[name])
    kernel = _jit(_walk)
    tiny = Controller(SearchSpace([Categorical("x", (0, 1), kind="x")], name="tiny"),
                      ControllerConfig(hidden_size=2, num_layers=1))
    plan = plan_of(tiny)
    kernel(plan.types, plan.kinds, plan.layers, np.zeros((1, 1)), *pack(tiny))
    _KERNEL = kernel


def _jit(function: Callable[..., Any]) -> Callable[..., Any]:
    import numba  # heavy (LLVM): imported on the first compiled ask

    try:  # compiled once per install, not once per process
        return cast(Callable[..., Any], numba.njit(cache=True, nogil=True)(function))
    except RuntimeError:  # no writable cache location: compile in each process
        return cast(Callable[..., Any], numba.njit(nogil=True)(function))


def _walk(types: np.ndarray, kinds: np.ndarray, layers: np.ndarray, uniforms: np.ndarray,
          go: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray,
          gru: bool, head_w: np.ndarray, head_b: np.ndarray, options: np.ndarray, emb: np.ndarray,
          w_prev: np.ndarray, w_curr: np.ndarray, v: np.ndarray, temperature: float,
          tanh_c: float) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Each row walked on its own (rows are independent), decision by decision, exactly as
    :meth:`Controller._walk` computes: the stacked cells, then a head's softmax or an
    anchor's attention over the earlier anchors, the token drawn by inverse CDF.

    The first layer's input is always a known vector's projection: an embedding row, the
    "go" vector, or the mean of chosen anchors' states -- and a projection is linear, so
    each of those is projected once (tables per kind, one per anchor) and the first
    layer's input gates are a lookup or a mean of projections: a quarter of a step's
    multiply-adds fewer. Every exp of a step is batched (:func:`_exp`)."""
    n, num_tokens = uniforms.shape
    depth, hidden, gates = w_ih.shape
    steps = types.shape[0]
    anchors_n = 0
    for d in range(steps):
        anchors_n += types[d]
    tokens = np.zeros((n, num_tokens), np.int64)
    logps = np.zeros(n)
    kinds_n, widest = options.shape[0], head_w.shape[2]
    emb_in = np.zeros((kinds_n, widest, gates))  # each embedding row's input gates
    for kind in range(kinds_n):
        for t in range(options[kind]):
            _project(emb[kind, t], w_ih[0], b_ih[0], emb_in[kind, t])
    go_in = np.zeros(gates)
    _project(go, w_ih[0], b_ih[0], go_in)
    h = np.zeros((depth, hidden))
    c = np.zeros((depth, hidden))
    first_in = np.zeros(gates)  # the first layer's input gates (with b_ih)
    gi = np.zeros(gates)
    gh = np.zeros(gates)
    # scratch for the batched exps: a cell's gates, or an anchor's attention over all earlier
    scratch = max(gates, max(anchors_n - 1, 1) * hidden)
    arg, e, scale = np.zeros(scratch), np.zeros(scratch), np.zeros(scratch)
    logits = np.zeros(widest)
    query = np.zeros(hidden)
    anchors = np.zeros((max(anchors_n, 1), hidden))
    anchors_w = np.zeros((max(anchors_n, 1), hidden))
    anchors_in = np.zeros((max(anchors_n, 1), gates))  # each anchor's state projected
    no_bias = np.zeros(gates)
    for r in range(n):
        h[:] = 0.0
        c[:] = 0.0
        first_in[:] = go_in
        seen_anchors = 0
        pos = 0
        lp = 0.0
        for d in range(steps):
            for layer in range(depth):  # the stacked cells
                if layer == 0:
                    gi[:] = first_in
                else:
                    _project(h[layer - 1], w_ih[layer], b_ih[layer], gi)
                _project(h[layer], w_hh[layer], b_hh[layer], gh)
                if gru:
                    _gru_update(gi, gh, h[layer], arg, e, scale)
                else:
                    _lstm_update(gi, gh, h[layer], c[layer], arg, e, scale)
            top = h[depth - 1]
            if types[d] == 0:
                kind = kinds[d]
                k = options[kind]
                for t in range(k):
                    logits[t] = head_b[kind, t]
                for j in range(hidden):
                    hj = top[j]
                    for t in range(k):
                        logits[t] += hj * head_w[kind, j, t]
                peak = -np.inf
                for t in range(k):
                    logits[t] = _squash(logits[t], temperature, tanh_c)
                    peak = max(peak, logits[t])
                total = 0.0
                for t in range(k):
                    total += math.exp(logits[t] - peak)
                target = uniforms[r, pos] * total
                acc = 0.0
                tok = k - 1
                for t in range(k):
                    acc += math.exp(logits[t] - peak)
                    if target < acc:
                        tok = t
                        break
                tokens[r, pos] = tok
                lp += logits[tok] - peak - math.log(total)
                first_in[:] = emb_in[kind, tok]
                pos += 1
            else:
                layer_i = layers[d]
                if seen_anchors == 0:
                    first_in[:] = go_in
                else:
                    query[:] = 0.0
                    for j in range(hidden):
                        hj = top[j]
                        for g in range(hidden):
                            query[g] += hj * w_curr[j, g]
                    chosen = 0
                    # tanh(W_prev h_j + W_curr h_i) for every earlier anchor j at once
                    size = layer_i * hidden
                    for j in range(layer_i):
                        for g in range(hidden):
                            arg[j * hidden + g] = 2.0 * (anchors_w[j, g] + query[g])
                    _exp(arg, e, scale, size)
                    for j in range(layer_i):
                        logit = 0.0
                        for g in range(hidden):
                            logit += v[g] * (1.0 - 2.0 / (e[j * hidden + g] + 1.0))
                        logit = _squash(logit, temperature, tanh_c)
                        # log sigmoid(-logit), log sigmoid(logit), stably
                        soft = math.log1p(math.exp(-abs(logit)))
                        lp_absent = min(-logit, 0.0) - soft
                        lp_present = min(logit, 0.0) - soft
                        p_absent = math.exp(lp_absent)
                        present = uniforms[r, pos + j] * (p_absent + math.exp(lp_present)) >= p_absent
                        if present:
                            tokens[r, pos + j] = 1
                            lp += lp_present
                            chosen += 1
                            for g in range(gates):
                                gi[g] = anchors_in[j, g] if chosen == 1 else gi[g] + anchors_in[j, g]
                        else:
                            lp += lp_absent
                    # the mean's projection: (sum of projections) / (1 + chosen), plus b_ih
                    for g in range(gates):
                        first_in[g] = b_ih[0, g] + (gi[g] / (1.0 + chosen) if chosen else 0.0)
                    pos += layer_i
                anchors[seen_anchors] = top
                anchors_w[seen_anchors] = 0.0
                for j in range(hidden):
                    hj = top[j]
                    for g in range(hidden):
                        anchors_w[seen_anchors, g] += hj * w_prev[j, g]
                _project(top, w_ih[0], no_bias, anchors_in[seen_anchors])
                seen_anchors += 1
        logps[r] = lp
    return tokens, logps


def _project(x: np.ndarray, w: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """out = b + x @ w, w laid out (in, out): the inner loop runs over contiguous outputs."""
    out[:] = b
    for k in range(x.shape[0]):
        xk = x[k]
        for g in range(out.shape[0]):
            out[g] += xk * w[k, g]


def _lstm_update(gi: np.ndarray, gh: np.ndarray, h: np.ndarray, c: np.ndarray, arg: np.ndarray,
                 e: np.ndarray, scale: np.ndarray) -> None:  # pragma: no cover - compiled
    """torch's LSTM cell from its input and hidden gates (i, f, g, o): sigmoid(s) is
    1 / (1 + e^-s) and tanh(s) is 1 - 2 / (e^2s + 1), so every gate is one batched exp."""
    hidden = h.shape[0]
    for g in range(4 * hidden):
        s = gi[g] + gh[g]
        arg[g] = 2.0 * s if 2 * hidden <= g < 3 * hidden else -s
    _exp(arg, e, scale, 4 * hidden)
    for j in range(hidden):
        cg = 1.0 - 2.0 / (e[2 * hidden + j] + 1.0)
        c[j] = c[j] / (1.0 + e[hidden + j]) + cg / (1.0 + e[j])
        arg[j] = 2.0 * c[j]
    for j in range(hidden):  # the output gate, before the exps below overwrite e
        arg[hidden + j] = 1.0 / (1.0 + e[3 * hidden + j])
    _exp(arg, e, scale, hidden)
    for j in range(hidden):
        h[j] = arg[hidden + j] * (1.0 - 2.0 / (e[j] + 1.0))


def _gru_update(gi: np.ndarray, gh: np.ndarray, h: np.ndarray, arg: np.ndarray, e: np.ndarray,
                scale: np.ndarray) -> None:  # pragma: no cover - compiled
    """torch's GRU cell (gates r, z, n): n reads r, so two batched exps."""
    hidden = h.shape[0]
    for g in range(2 * hidden):
        arg[g] = -(gi[g] + gh[g])
    _exp(arg, e, scale, 2 * hidden)
    for j in range(hidden):
        r = 1.0 / (1.0 + e[j])
        arg[2 * hidden + j] = 1.0 / (1.0 + e[hidden + j])  # z, kept past the next exps
        arg[j] = 2.0 * (gi[2 * hidden + j] + r * gh[2 * hidden + j])
    _exp(arg, e, scale, hidden)
    for j in range(hidden):
        z = arg[2 * hidden + j]
        h[j] = (1.0 - z) * (1.0 - 2.0 / (e[j] + 1.0)) + z * h[j]


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split (fdlibm's): k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_SHIFT = 1023.0 + 4503599627370496.0  # k + this: k + 1023 in the low mantissa bits
_MANTISSA = 0xFFFFFFFFFFFFF
_INV_FACTORIALS = tuple(1.0 / math.factorial(i) for i in range(14))


def _exp(z: np.ndarray, out: np.ndarray, scale: np.ndarray, n: int) -> None:  # pragma: no cover
    """out[:n] = exp(z[:n]) (z clipped to [-708, 709]) in loops the compiler vectorizes --
    libm's exp is one call per element, and the walk's time was half exps. e^z = 2^k e^r
    with |r| <= ln2 / 2, e^r by its Taylor series to r^13 (truncation ~4e-18, rounding a
    few ulp: within 2e-16 of libm, tested), 2^k built in the exponent bits."""
    bits = scale.view(np.int64)
    for i in range(n):
        x = min(max(z[i], -708.0), 709.0)
        k = math.floor(x * _LOG2E + 0.5)
        r = (x - k * _LN2_HI) - k * _LN2_LO
        p = _INV_FACTORIALS[13]
        for m in range(12, -1, -1):
            p = p * r + _INV_FACTORIALS[m]
        out[i] = p
        scale[i] = k + _SHIFT
    for i in range(n):
        bits[i] = (bits[i] & _MANTISSA) << 52
    for i in range(n):
        out[i] *= scale[i]


def _squash(logit: float, temperature: float, tanh_c: float) -> float:  # pragma: no cover
    if temperature != 1.0:
        logit = logit / temperature
    if not math.isnan(tanh_c):
        logit = tanh_c * math.tanh(logit)
    return logit
