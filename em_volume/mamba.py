"""Mamba-1 in plain PyTorch, TokenUnify's three-direction variant, and the selective-scan backends.

Shape letters: B batch, L sequence length, C model width (d_model), E inner width (expand * C),
N state size (d_state), R dt rank.

Parameter names follow ``mamba_ssm.modules.mamba_simple.Mamba`` (``in_proj``, ``conv1d``, ``x_proj``,
``dt_proj``, ``A_log``, ``D``, ``out_proj``), so an upstream state_dict loads as it is. TokenUnify's
"v3" layer (SegMamba's tri-oriented Mamba with a fixed interleave of 5) shares ``in_proj`` and
``out_proj`` and gives each of its three orders (forward, reversed, 5-way interleaved) its own conv,
projections, A and D, suffixed ``_b`` and ``_s``. Its three gated outputs are summed, not averaged.

The scan ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t . h_t + D u_t`` sits behind one
function, :func:`selective_scan`, with three backends:

- ``"reference"``: a step-by-step loop over time (the definition; slow under autograd).
- ``"chunked"``: the default on CPU. A two-level scan (a loop inside fixed-size chunks, vectorised over
  all chunks, then a recursive scan over the chunk carries) with its own backward pass, which is the
  same scan run in reverse. Products of decays lie in (0, 1], so nothing can overflow; no log-space
  cumulative sums are used.
- ``"mamba_ssm"``: mamba-ssm's fused CUDA kernel, used when the package is installed and the tensors live on a
  CUDA device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.errors import ConfigError, InputError

try:  # the fused CUDA kernels; mamba-ssm only builds on CUDA machines
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan
except Exception:  # ImportError, or mamba-ssm failing on its missing compiled extension
    _cuda_selective_scan = None

BACKENDS = ("auto", "reference", "chunked", "mamba_ssm")


def cuda_scan_available() -> bool:
    return _cuda_selective_scan is not None and torch.cuda.is_available()


# ---- linear recurrences over the leading (time) axis --------------------------------------------
SCAN_CHUNK = 16  # steps per chunk; the recursion makes it log_T(L) levels of T steps each


def _chunk_size(length: int, target: int) -> int:
    """A divisor of ``length`` in [target/2, 2 target] (no padding needed), else ``target``."""
    for size in sorted(range(max(2, target // 2), 2 * target + 1), key=lambda s: abs(s - target)):
        if length % size == 0:
            return size
    return target


def linear_scan(a: Tensor, x: Tensor, reverse: bool = False, inplace: bool = False, chunk: int | None = None) -> Tensor:
    """All states of a first-order linear recurrence, time along dim 0, zero initial state.

    forward: ``h_t = a_t * h_{t-1} + x_t``. reverse: ``h_t = a_t * h_{t+1} + x_t`` (the adjoint scan,
    with ``a`` already holding the coefficient that multiplies the later state).

    Two levels: a loop of ``T`` steps runs inside every chunk of ``T`` steps at once, the chunks'
    boundary states come from the same scan over chunks (recursively), and every chunk is then
    corrected by (running product of its decays) * (state entering it). With chunks of T steps that
    is about T log_T(L) Python steps instead of L. Products of decays in [0, 1] (as in Mamba) cannot overflow.
    ``inplace`` lets the result overwrite ``x``.
    """
    length = a.shape[0]
    # the chunked views below must alias h, so h has to be contiguous (reshape would copy otherwise)
    h = x.contiguous() if inplace else x.clone(memory_format=torch.contiguous_format)
    a = a.contiguous()
    if length <= 2 * (chunk or SCAN_CHUNK):
        steps = range(length - 2, -1, -1) if reverse else range(1, length)
        for t in steps:
            h[t].addcmul_(a[t], h[t + 1] if reverse else h[t - 1])
        return h
    chunk = chunk or SCAN_CHUNK
    size = _chunk_size(length, chunk)
    n_chunks = -(-length // size)
    pad = n_chunks * size - length
    rest = a.shape[1:]
    if pad:  # padding goes after the end (forward) or before the start (reverse): it never reaches real steps
        fill_a, fill_x = a.new_zeros((pad, *rest)), x.new_zeros((pad, *rest))
        a = torch.cat([fill_a, a] if reverse else [a, fill_a])
        h = torch.cat([fill_x, h] if reverse else [h, fill_x])
    a3 = a.reshape(n_chunks, size, -1)  # (nC, T, M)
    h3 = h.reshape(n_chunks, size, -1)
    # decay[:, t]: the product of a from step t to the chunk's end (reverse: built in the same sweep as the
    # local scan, where a cumprod would need two flipped copies) or from its start to t (forward: cumprod).
    decay = torch.empty_like(a3)
    if reverse:
        decay[:, -1] = a3[:, -1]
        for t in range(size - 2, -1, -1):
            h3[:, t].addcmul_(a3[:, t], h3[:, t + 1])
            torch.mul(a3[:, t], decay[:, t + 1], out=decay[:, t])
        if n_chunks > 1:
            carry = linear_scan(
                decay[1:, 0], h3[1:, 0].clone(), reverse=True, inplace=True, chunk=chunk
            )  # state at chunk starts
            h3[:-1].addcmul_(decay[:-1], carry.unsqueeze(1))
    else:
        for t in range(1, size):
            h3[:, t].addcmul_(a3[:, t], h3[:, t - 1])
        torch.cumprod(a3, dim=1, out=decay)
        if n_chunks > 1:
            carry = linear_scan(decay[:-1, -1], h3[:-1, -1].clone(), inplace=True, chunk=chunk)  # state at chunk ends
            h3[1:].addcmul_(decay[1:], carry.unsqueeze(1))
    h = h3.reshape(n_chunks * size, *rest)
    if pad:
        h = h[pad:] if reverse else h[:length]
    return h


# ---- the selective scan ---------------------------------------------------------------------------
def _discretize(delta: Tensor, delta_bias: Tensor | None, softplus: bool) -> Tensor:
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(delta.dtype)
    return F.softplus(delta) if softplus else delta


def _work_dtype(x: Tensor) -> torch.dtype:
    """Scans run in float32 (as mamba-ssm), or float64 for float64 inputs."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def selective_scan_reference(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
):
    """The definition, one time step at a time (float32). Shapes as in :func:`selective_scan`."""
    dtype, work = u.dtype, _work_dtype(u)
    u, delta, A, B, C = u.to(work), delta.to(work), A.to(work), B.to(work), C.to(work)
    delta = _discretize(delta, delta_bias, delta_softplus)  # (B, E, L)
    decay = torch.exp(torch.einsum("bel,en->beln", delta, A))  # (B, E, L, N)
    drive = torch.einsum("bel,bnl,bel->beln", delta, B, u)
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # (B, E, N)
    ys = []
    for t in range(u.shape[2]):
        state = decay[:, :, t] * state + drive[:, :, t]
        ys.append(torch.einsum("ben,bn->be", state, C[:, :, t]))
    y = torch.stack(ys, dim=2)  # (B, E, L)
    if D is not None:
        y = y + u * D.to(work)[:, None]
    if z is not None:
        y = y * F.silu(z.to(work))
    y = y.to(dtype)
    return (y, state) if return_last_state else y


class _ChunkedSelectiveScan(torch.autograd.Function):
    """Selective scan with a hand-written backward; every tensor is time-major (L, B, E, N) inside."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus: bool):
        work = _work_dtype(u)
        raw = delta.to(work) if delta_bias is None else delta.to(work) + delta_bias.to(work)[:, None]
        # The (L, B, E) and (L, B, N) operands are made time-major contiguous first (they are N or E times
        # smaller than the states), so every (L, B, E, N) tensor below is born contiguous: no copies in the scan.
        dt = (F.softplus(raw) if softplus else raw).permute(2, 0, 1).contiguous()  # (L, B, E)
        u_t = u.to(work).permute(2, 0, 1).contiguous()
        B_t, C_t = (t.to(work).permute(2, 0, 1).contiguous() for t in (B, C))  # (L, B, N)
        A = A.to(work)
        decay = torch.mul(dt.unsqueeze(-1), A).exp_()  # (L, B, E, N), in (0, 1] for A < 0
        drive = (dt * u_t).unsqueeze(-1) * B_t.unsqueeze(2)
        h = linear_scan(decay, drive, inplace=True)  # drive is overwritten by the states
        del decay
        y = torch.matmul(h, C_t.unsqueeze(-1)).squeeze(-1)  # (L, B, E): sum_n h C without an (L, B, E, N) product
        if D is not None:
            y = y + u_t * D.to(work)
        out = y
        if z is not None:
            out = y * F.silu(z.to(work).permute(2, 0, 1))
        ctx.softplus = softplus
        ctx.has = (D is not None, z is not None, delta_bias is not None)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, h, y)
        last = h[-1].clone()
        return out.permute(1, 2, 0).to(u.dtype), last

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        u, delta, A, B, C, D, z, delta_bias, h, y = ctx.saved_tensors
        work = _work_dtype(u)
        has_d, has_z, has_bias = ctx.has
        raw = delta.to(work) if delta_bias is None else delta.to(work) + delta_bias.to(work)[:, None]
        raw = raw.permute(2, 0, 1).contiguous()  # (L, B, E)
        dt = F.softplus(raw) if ctx.softplus else raw
        u_t = u.to(work).permute(2, 0, 1).contiguous()
        B_t, C_t = (t.to(work).permute(2, 0, 1).contiguous() for t in (B, C))
        g_out = grad_out.to(work).permute(2, 0, 1).contiguous()
        grad_z = None
        if has_z:
            z_t = z.to(work).permute(2, 0, 1)
            gate = torch.sigmoid(z_t)
            g_y = g_out * z_t * gate
            grad_z = (g_out * y * gate * (1 + z_t * (1 - gate))).permute(1, 2, 0).to(z.dtype)
        else:
            g_y = g_out
        grad_D = (g_y * u_t).sum((0, 1)).to(D.dtype) if has_d else None
        g_u = g_y * D.to(work) if has_d else torch.zeros_like(u_t)
        grad_C = torch.matmul(g_y.unsqueeze(-2), h).squeeze(-2)  # (L, B, N) = sum_e g_y h
        g_h = g_y.unsqueeze(-1) * C_t.unsqueeze(2)  # (L, B, E, N)
        if grad_last is not None:
            g_h[-1] += grad_last.to(work)
        # decay_next[t] = exp(dt_{t+1} A) couples g_t to g_{t+1}; decay_next[t-1] is step t's own decay.
        decay_next = torch.empty_like(h)
        torch.mul(dt[1:].unsqueeze(-1), A, out=decay_next[:-1]).exp_()
        decay_next[-1] = 0
        g = linear_scan(decay_next, g_h, reverse=True, inplace=True)  # dLoss/d drive_t
        # dLoss/d (dt_t A) = g_t * h_{t-1} * decay_t, zero at t = 0 (h_{-1} = 0)
        g_dtA = torch.zeros_like(h)
        torch.mul(g[1:], h[:-1], out=g_dtA[1:])
        g_dtA[1:].mul_(decay_next[:-1])
        del decay_next
        g_dt = (g_dtA * A).sum(-1)  # (L, B, E)
        grad_A = g_dtA.mul_(dt.unsqueeze(-1)).sum((0, 1))
        del g_dtA
        g_drive_B = torch.matmul(g, B_t.unsqueeze(-1)).squeeze(-1)  # sum_n g * B, (L, B, E)
        grad_B = torch.matmul((dt * u_t).unsqueeze(-2), g).squeeze(-2)  # (L, B, N) = sum_e g dt u
        g_dt = g_dt + g_drive_B * u_t
        g_u = g_u + g_drive_B * dt
        g_raw = g_dt * torch.sigmoid(raw) if ctx.softplus else g_dt
        grad_bias = g_raw.sum((0, 1)).to(delta_bias.dtype) if has_bias else None
        return (
            g_u.permute(1, 2, 0).to(u.dtype),
            g_raw.permute(1, 2, 0).to(delta.dtype),
            grad_A.to(A.dtype),
            grad_B.permute(1, 2, 0).to(B.dtype),
            grad_C.permute(1, 2, 0).to(C.dtype),
            grad_D,
            grad_z,
            grad_bias,
            None,
        )


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
):
    """Mamba-1's selective scan, ``y = (scan(u) + D u) * silu(z)``, computed in float32 (float64 inputs: float64).

    Args:
        u, delta, z: (B, E, L). A: (E, N) real (negative for a stable scan). B, C: (B, N, L).
        D, delta_bias: (E,). ``delta_softplus`` applies softplus to ``delta + delta_bias``.
        backend: "auto" (mamba-ssm's kernel for GPU tensors when it is installed, else "chunked"),
            "reference", "chunked" or "mamba_ssm".
    Returns:
        y (B, E, L) in u's dtype, and the last state (B, E, N) when ``return_last_state``.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"selective_scan backend={backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "mamba_ssm" if (u.is_cuda and _cuda_selective_scan is not None) else "chunked"
    if backend == "reference":
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if backend == "mamba_ssm":
        if _cuda_selective_scan is None or not u.is_cuda:
            raise ConfigError(
                "backend='mamba_ssm' needs mamba-ssm installed (pip install tokenzoo[gpu]) and GPU tensors"
            )
        return _cuda_selective_scan(
            u, delta, A, B.contiguous(), C.contiguous(), D, z, delta_bias, delta_softplus, return_last_state
        )
    y, last = _ChunkedSelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (y, last) if return_last_state else y


# ---- Mamba blocks -----------------------------------------------------------------------------------
def interleave_order(length: int, n_slices: int, device=None) -> Tensor:
    """The strided direction's token order: position k reads token (k mod n) * (L / n) + k // n."""
    if length % n_slices:
        raise InputError(f"sequence length {length} is not divisible by nslices={n_slices} (strided Mamba scan)")
    k = torch.arange(length, device=device)
    return (k % n_slices) * (length // n_slices) + k // n_slices


class Mamba(nn.Module):
    """Mamba-1 block (``mamba_ssm`` names and init); ``bimamba_type="v3"`` adds TokenUnify's two extra orders.

    Args:
        d_model: C. d_state: N. d_conv: causal depthwise conv width. expand: E = expand * C.
        dt_rank: R, "auto" = ceil(C / 16). dt_min, dt_max, dt_init_floor, dt_scale: dt initialisation.
        bimamba_type: None (one direction) or "v3" (forward + reversed + interleaved, summed).
        nslices: interleave factor of the v3 strided order (TokenUnify: 5 at every stage).
        scan_backend: see :func:`selective_scan`.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_scale: float = 1.0,
        conv_bias: bool = True,
        bias: bool = False,
        bimamba_type: str | None = None,
        nslices: int = 5,
        scan_backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if bimamba_type not in (None, "v3"):
            raise ConfigError(f"bimamba_type={bimamba_type!r}; supported: None (plain Mamba) or 'v3' (TokenUnify)")
        kw = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.bimamba_type, self.nslices, self.scan_backend = bimamba_type, nslices, scan_backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **kw)
        self.suffixes = ("",) if bimamba_type is None else ("", "_b", "_s")
        for s in self.suffixes:
            self.add_module(
                f"conv1d{s}",
                nn.Conv1d(
                    self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=conv_bias, **kw
                ),
            )
            self.add_module(f"x_proj{s}", nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **kw))
            self.add_module(f"dt_proj{s}", nn.Linear(self.dt_rank, self.d_inner, bias=True, **kw))
            # S4D-real init: A = -(1..N) for every channel; kept as a log so A stays negative.
            a_init = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
            a_name = "A_log" if s == "" else f"A{s}_log"
            self.register_parameter(a_name, nn.Parameter(torch.log(a_init)))
            self.register_parameter(f"D{s}", nn.Parameter(torch.ones(self.d_inner, device=device)))
            getattr(self, a_name)._no_weight_decay = True
            getattr(self, f"D{s}")._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **kw)
        # Only the forward dt_proj gets Mamba's dt init (as upstream); the other two keep nn.Linear's.
        std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            dt = torch.exp(
                torch.rand(self.d_inner, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            ).clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.dt_proj.bias._no_reinit = True

    def _params(self, s: str):
        a_log = self.A_log if s == "" else getattr(self, f"A{s}_log")
        return (
            getattr(self, f"conv1d{s}"),
            getattr(self, f"x_proj{s}"),
            getattr(self, f"dt_proj{s}"),
            a_log,
            getattr(self, f"D{s}"),
        )

    def _scan_direction(self, xz: Tensor, s: str, trace: dict | None = None, prefix: str = "") -> Tensor:
        """One direction on xz (B, 2E, L) already in that direction's order -> gated y (B, E, L)."""
        conv, x_proj, dt_proj, a_log, d_skip = self._params(s)
        length = xz.shape[-1]
        x, z = xz.chunk(2, dim=1)
        x = F.silu(conv(x)[..., :length])  # causal: keep the first L outputs of the left-padded conv
        x_dbl = x_proj(x.transpose(1, 2))  # (B, L, R + 2N)
        dt_low, b_in, c_in = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta_raw = torch.matmul(dt_proj.weight, dt_low.transpose(1, 2))  # (B, E, L); bias goes inside the scan
        work = _work_dtype(x)
        A = -torch.exp(a_log.to(work))
        b_in, c_in = b_in.transpose(1, 2).contiguous(), c_in.transpose(1, 2).contiguous()  # (B, N, L)
        y = selective_scan(
            x, delta_raw, A, b_in, c_in, d_skip.to(work), z, dt_proj.bias.to(work), True, backend=self.scan_backend
        )
        if trace is not None:
            ungated = selective_scan(
                x,
                delta_raw,
                A,
                b_in,
                c_in,
                d_skip.to(work),
                None,
                dt_proj.bias.to(work),
                True,
                backend=self.scan_backend,
            )
            trace.update(
                {
                    f"{prefix}y_ungated": ungated,
                    f"{prefix}conv_out": x,
                    f"{prefix}dt_low": dt_low,
                    f"{prefix}delta_raw": delta_raw,
                    f"{prefix}delta": F.softplus(delta_raw + dt_proj.bias[:, None]),
                    f"{prefix}B": b_in,
                    f"{prefix}C": c_in,
                    f"{prefix}y": y,
                }
            )
        return y

    def forward(self, hidden: Tensor, trace: dict | None = None) -> Tensor:
        """(B, L, C) -> (B, L, C). ``trace``, if given, receives the intermediates by name."""
        length = hidden.shape[1]
        xz = torch.matmul(self.in_proj.weight, hidden.transpose(1, 2))  # (B, 2E, L): rows [0, E) x, [E, 2E) z
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias[:, None]
        if self.bimamba_type is None:
            y = self._scan_direction(xz, "", trace)
        else:
            order = interleave_order(length, self.nslices, xz.device)
            y_f = self._scan_direction(xz, "", trace, "f.")
            y_b = self._scan_direction(xz.flip(-1), "_b", trace, "b.").flip(-1)
            y_s = self._scan_direction(xz[..., order], "_s", trace, "s.")
            # back to token order: slot k holds token order[k], so split k = j * n + i and swap (j, i).
            y_s = y_s.reshape(*y_s.shape[:-1], length // self.nslices, self.nslices).transpose(-1, -2)
            y_s = y_s.reshape(*y_s.shape[:-2], length)
            y = y_f + y_b + y_s
            if trace is not None:
                trace.update({"f.y_aligned": y_f, "b.y_aligned": y_b, "s.y_aligned": y_s, "perm_s": order})
        if trace is not None:
            trace.update({"xz": xz, "y_sum": y})
        return self.out_proj(y.transpose(1, 2))

    # ---- step-by-step decoding (plain Mamba only) --------------------------------------------------
    def initial_state(self, batch_size: int, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        """Zero (conv_state (B, E, d_conv), ssm_state (B, E, N)) for :meth:`step`."""
        device = device or self.in_proj.weight.device
        conv = torch.zeros(
            batch_size, self.d_inner, self.d_conv, device=device, dtype=dtype or self.in_proj.weight.dtype
        )
        ssm = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=torch.float32)
        return conv, ssm

    def step(self, hidden: Tensor, conv_state: Tensor, ssm_state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One token (B, 1, C) -> (B, 1, C) and the new (conv_state, ssm_state); same result as forward."""
        if self.bimamba_type is not None:
            raise ConfigError("step decoding needs a one-directional Mamba (bimamba_type=None)")
        xz = self.in_proj(hidden.squeeze(1))  # (B, 2E)
        x, z = xz.chunk(2, dim=-1)
        conv_state = torch.cat([conv_state[:, :, 1:], x.unsqueeze(-1)], dim=-1)  # last d_conv pre-conv inputs
        x = (conv_state * self.conv1d.weight.squeeze(1)).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)
        dt_low, b_in, c_in = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(F.linear(dt_low, self.dt_proj.weight) + self.dt_proj.bias).float()  # (B, E)
        A = -torch.exp(self.A_log.float())
        ssm_state = ssm_state * torch.exp(dt.unsqueeze(-1) * A) + (dt * x.float()).unsqueeze(
            -1
        ) * b_in.float().unsqueeze(1)
        y = torch.matmul(ssm_state, c_in.float().unsqueeze(-1)).squeeze(-1) + self.D.float() * x.float()
        y = (y * F.silu(z.float())).to(hidden.dtype)
        return self.out_proj(y).unsqueeze(1), conv_state, ssm_state


class MambaLayer(nn.Module):
    """TokenUnify's MambaLayer: flatten (B, C, D, H, W) to tokens in z-major raster order, LayerNorm,
    three-direction Mamba, reshape back. No residual connection (upstream removed SegMamba's)."""

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        nslices: int = 5,
        scan_backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim, device=device, dtype=dtype)
        self.mamba = Mamba(
            dim,
            d_state,
            d_conv,
            expand,
            bimamba_type="v3",
            nslices=nslices,
            scan_backend=scan_backend,
            device=device,
            dtype=dtype,
        )

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        spatial = x.shape[2:]
        tokens = x.reshape(b, c, -1).transpose(1, 2)  # (B, L, C); L index = d*H*W + h*W + w
        out = self.mamba(self.norm(tokens))
        return out.transpose(1, 2).reshape(b, c, *spatial)
