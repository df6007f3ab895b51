"""Parity fixtures: upstream code run on tiny random configs (../shared/parity), read and compared one way.

Locating. Tests parametrize over ``fixture_dirs("hot")``. Where the fixtures are absent they skip and say
why; with ``TOKENZOO_REQUIRE_PARITY=1`` (set by .ci/run) that is a failure, since a skipped parity test is
not a pass.

Reading. ``load_fixture(folder)`` gives a ``Fixture``: its parsed ``config`` and ``io``, a read-only mapping
over io.safetensors that hands out only the tensors config.json describes (its ``io_tensors`` table, or an
``io`` table of ``{shape, dtype}`` entries, or what a family's ``describe(config)`` derives where the config
has neither). Each tensor is checked against its description when read, and reading any other key raises
``FixtureKeyError`` naming the key: a test cannot take a key, a batch composition or an index range from
the public set. ``fixture.tensors(file, described)`` does the same for a fixture's other files.

Comparing. One rule for every family, written here once:

* floats: ``|ours - upstream| <= atol + rtol * |upstream| + e``. atol and rtol are the fixture's stated
  tolerances (``ToleranceTable`` reads them from config.json); ``e`` is an error-model term, non-zero only
  where rounding provably exceeds them, such as the cancellation in ``torch.cdist``'s matmul formula
  (``cdist_squared_error``). Distances are compared as squares (``assert_close_squared``): the square is
  what the formula computes, so near 0, where the root magnifies rounding without bound, the test still
  checks something meaningful.
* discrete decisions (ids, kept frames, argmin labels) are exact, except where the fixture's own values put
  upstream's choice within the noise budget of another (a near-tie): there our choice must be one of the
  tied set, and a ``NearTieWarning`` names every such element (``assert_same_decisions``; for argmin/argmax
  and ranked choices ``assert_same_choice``, for sets ``assert_same_selection``, for quantizer ids
  ``assert_same_fsq_ids`` and ``assert_same_vq_ids``, for a value a decision picked ``assert_close_or_tied``).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from zoo.errors import FixtureKeyError

DEFAULT_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "parity"


# ---- locating ---------------------------------------------------------------------------------------
def parity_root() -> Path:
    return Path(os.environ.get("TOKENZOO_PARITY_DIR", DEFAULT_DIR))


def parity_required() -> bool:
    return os.environ.get("TOKENZOO_REQUIRE_PARITY", "") not in ("", "0", "false", "no")


def fixture_dirs(family: str, marker: str = "config.json") -> list[Path]:
    """Every folder under ``$TOKENZOO_PARITY_DIR/family`` (recursively) that holds ``marker``."""
    root = parity_root() / family
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.rglob(marker))


def missing_reason(family: str) -> str:
    return f"no {family} parity fixtures under {parity_root() / family} (set TOKENZOO_PARITY_DIR)"


# ---- reading: only what config.json describes ---------------------------------------------------------
DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


class FixtureTensors(Mapping):
    """Read-only ``{key: Tensor}`` over one safetensors file that hands out only the described keys.

    ``described`` maps each key to its description (a dict that may hold ``shape``, where None stands for
    any size, and ``dtype``, both checked on read) or None. Iteration, ``len`` and ``in`` cover the keys
    that are both described and stored. ``read`` records every key handed out.
    """

    def __init__(self, path: Path, described: Mapping[str, dict | None]):
        from safetensors import safe_open

        self.path = Path(path)
        self.described = dict(described)
        self.read: set[str] = set()
        self._cache: dict[str, Tensor] = {}
        with safe_open(str(self.path), framework="pt") as f:
            self.stored = frozenset(f.keys())

    def __getitem__(self, key: str) -> Tensor:
        if key not in self.described:
            raise FixtureKeyError(key, str(self.path), "a test read the undescribed key", self.described)
        if key not in self.stored:
            raise FixtureKeyError(key, str(self.path), "the file does not store the described key", self.described)
        if key not in self._cache:
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as f:
                tensor = f.get_tensor(key)
            self._check(key, tensor)
            self._cache[key] = tensor
        self.read.add(key)
        return self._cache[key]

    def _check(self, key: str, tensor: Tensor) -> None:
        spec = self.described[key] or {}
        shape, dtype = spec.get("shape"), spec.get("dtype")
        if shape is not None and (
            len(shape) != tensor.dim() or any(n is not None and n != m for n, m in zip(shape, tensor.shape))
        ):
            raise AssertionError(f"{self.path}: {key} has shape {list(tensor.shape)}, config.json says {shape}")
        if dtype is not None and DTYPES.get(str(dtype).removeprefix("torch.")) not in (None, tensor.dtype):
            raise AssertionError(f"{self.path}: {key} has dtype {tensor.dtype}, config.json says {dtype}")

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(k for k in self.described if k in self.stored))

    def __len__(self) -> int:
        return sum(1 for k in self.described if k in self.stored)

    def __contains__(self, key) -> bool:
        return key in self.described and key in self.stored

    def description(self, key: str) -> dict:
        """The config's entry for ``key`` (``{}`` where the description is derived without one)."""
        if key not in self.described:
            raise FixtureKeyError(key, str(self.path), "config.json does not describe", self.described)
        return self.described[key] or {}

    def undescribed_stored(self) -> list[str]:
        """Keys the file stores that the description does not cover (a fixture or describer gap)."""
        return sorted(self.stored - set(self.described))


def io_table(config: dict) -> dict[str, dict] | None:
    """The per-tensor table of a config.json: ``io_tensors``, or an ``io`` whose entries hold a shape."""
    table = config.get("io_tensors")
    if table is None and isinstance(config.get("io"), dict):
        entries = config["io"].values()
        if entries and all(isinstance(v, dict) and "shape" in v for v in entries):
            table = config["io"]
    return table


@dataclass
class Fixture:
    """One fixture folder: ``config`` (config.json) and ``io`` (io.safetensors, described keys only)."""

    folder: Path
    config: dict
    io: FixtureTensors
    others: dict[str, FixtureTensors] = field(default_factory=dict)

    def tensors(self, file: str, described: Mapping[str, dict | None]) -> FixtureTensors:
        """Another safetensors file of the fixture (a path relative to the folder), with its own description."""
        path = (self.folder / file).resolve()
        if str(path) not in self.others:
            self.others[str(path)] = FixtureTensors(path, described)
        return self.others[str(path)]

    @property
    def weights_file(self) -> Path:
        return self.folder / "weights.safetensors"


def load_fixture(folder: Path, describe: Callable[[dict], Mapping[str, dict | None]] | None = None) -> Fixture:
    """config.json and io.safetensors of ``folder``; io keys from the config's table, else from ``describe``."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    described = io_table(config)
    if described is None:
        if describe is None:
            raise ValueError(f"{folder}/config.json has no io table; pass describe(config) for this family")
        described = describe(config)
    return Fixture(folder, config, FixtureTensors(folder / "io.safetensors", described))


# ---- the stated tolerances ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """``|ours - upstream| <= atol + rtol * |upstream|``; ``exact`` for ids, indices and masks."""

    atol: float = 0.0
    rtol: float = 0.0
    exact: bool = False

    def budget(self, expected: Tensor) -> Tensor:
        return self.atol + self.rtol * expected.double().abs()

    @classmethod
    def parse(cls, text) -> Tolerance:
        """From a config value: ``{"atol": .., "rtol": ..}``, ``"atol 1e-4, rtol 0"`` or ``"exact"``."""
        if isinstance(text, dict) and ("atol" in text or "rtol" in text):
            return cls(float(text.get("atol", 0.0)), float(text.get("rtol", 0.0)))
        if isinstance(text, str):
            found = dict(re.findall(r"\b([ar]tol)\s*[=:]?\s*([0-9.]+(?:e[-+]?\d+)?)", text))
            if found:
                return cls(float(found.get("atol", 0.0)), float(found.get("rtol", 0.0)))
            if text.strip().lower().startswith("exact"):
                return cls(exact=True)
        raise ValueError(f"no tolerance in {text!r}")


class ToleranceTable:
    """A fixture's stated tolerances, looked up by tensor key.

    Reads the forms the fixture configs use: one string for every tensor; ``{label: text}`` where a label
    lists keys or fnmatch patterns separated by ``,``, ``/`` or ``and`` (notes in parentheses ignored, a
    label starting with "other" is the default); ``{"float_outputs": {...}, "indices": "exact"}``; and flat
    ``{"mel_atol": .., "enc_atol": .., "enc_rtol": ..}`` (label = the prefix).
    """

    def __init__(self, section, where: str = "config.json"):
        self.where = where
        self.entries: list[tuple[str, list[str], Tolerance]] = []
        self.default: Tolerance | None = None
        if isinstance(section, dict) and isinstance(section.get("suggested"), (str, dict)):
            section = section["suggested"]
        if isinstance(section, str):
            self.default = Tolerance.parse(section)
            return
        flat: dict[str, dict] = {}
        for label, text in section.items():
            match = re.fullmatch(r"(.+)_([ar]tol)", label)
            if match and isinstance(text, (int, float)):
                flat.setdefault(match[1], {})[match[2]] = text
                continue
            try:
                tol = Tolerance.parse(text)
            except ValueError:
                continue  # a note, not a tolerance
            self._add(label, tol)
        for label, values in flat.items():
            self._add(label, Tolerance.parse(values))

    def _add(self, label: str, tol: Tolerance) -> None:
        bare = re.sub(r"\([^)]*\)", "", label).strip()
        if bare.lower().startswith("other"):
            self.default = tol
        patterns = [p.strip() for p in re.split(r",|/|\band\b", bare) if p.strip()]
        self.entries.append((label, patterns, tol))

    def __getitem__(self, key: str) -> Tolerance:
        """The tolerance whose label names ``key`` (a tensor key, or a label such as "losses"): an exact
        name first, then the most specific matching pattern (the one with the most literal characters)."""
        for label, patterns, tol in self.entries:
            if key == label or key in patterns:
                return tol
        matching = [
            (len(p.replace("*", "").replace("?", "")), tol)
            for _, patterns, tol in self.entries
            for p in patterns
            if fnmatch.fnmatchcase(key, p)
        ]
        if matching:
            return max(matching, key=lambda m: m[0])[1]
        if self.default is not None:
            return self.default
        labels = ", ".join(label for label, _, _ in self.entries)
        raise KeyError(f"{self.where} states no tolerance for {key!r} (it has: {labels})")


# ---- the error model ------------------------------------------------------------------------------------
UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def gamma(n: int, dtype: torch.dtype = torch.float32) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of a sum or dot product of n terms
    in ``dtype`` (Accuracy and Stability of Numerical Algorithms, section 3.1), whatever the order."""
    nu = n * UNIT_ROUNDOFF[dtype]
    return nu / (1 - nu)


def cdist_squared_error(x: Tensor, y: Tensor | None = None) -> Tensor:
    """(..., P, R): a bound on the rounding error of every squared distance ``torch.cdist(x, y)`` computes
    with its matmul formula |x_i|^2 + |y_j|^2 - 2 x_i.y_j (used beyond 25 rows), in units of x squared.

    The formula is one dot product of C + 2 terms whose magnitudes add up to at most 2 (|x_i|^2 + |y_j|^2),
    after two norms of C terms each, so the error is at most (2 gamma_{C+2} + gamma_C)(|x_i|^2 + |y_j|^2).
    It does not shrink with the distance: the true distance of a row to itself is 0, and the diagonal of
    cdist(x, x) is this rounding alone (upstream's fixtures hold up to ~1e-3 there).
    """
    y = x if y is None else y
    c = x.shape[-1]
    nx, ny = (x.double() ** 2).sum(-1), (y.double() ** 2).sum(-1)
    return (2 * gamma(c + 2, x.dtype) + gamma(c, x.dtype)) * (nx[..., :, None] + ny[..., None, :])


def distance_error(sq_error: Tensor, expected: Tensor) -> Tensor:
    """What an error of ``sq_error`` in a squared distance allows in the distance ``expected`` itself:
    |a - b| = |a^2 - b^2| / (a + b) <= min(sqrt(E), E / b)."""
    expected = expected.double().abs()
    return torch.minimum(sq_error.sqrt(), sq_error / expected.clamp_min(1e-300))


# ---- comparing ------------------------------------------------------------------------------------------
class NearTieWarning(UserWarning):
    """A discrete decision differs from upstream's where the fixture shows a near-tie within the noise."""


def _where(index: tuple) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def assert_close(actual: Tensor, expected: Tensor, tol: Tolerance, name: str, *, extra=0.0) -> None:
    """Floats within ``tol`` plus the error-model term ``extra`` (a float or a tensor like ``expected``).

    Non-finite entries must sit at the same places with the same values. An ``exact`` tolerance demands
    equal dtype and values.
    """
    actual = actual.detach().cpu()
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{name}: shape {tuple(actual.shape)}, upstream {tuple(expected.shape)}"
    )
    if tol.exact or not expected.is_floating_point():
        assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype}, upstream {expected.dtype}"
        bad = actual != expected
        if bad.any():
            first = tuple(bad.nonzero()[0].tolist())
            raise AssertionError(
                f"{name}: {int(bad.sum())} of {bad.numel()} entries differ (exact); first at {_where(first)}: "
                f"ours {actual[first].item()}, upstream {expected[first].item()}"
            )
        return
    a, e = actual.double(), expected.double()
    finite = torch.isfinite(e)
    assert torch.equal(torch.isfinite(a), finite), f"{name}: non-finite entries at other places than upstream's"
    assert torch.equal(a[~finite], e[~finite]), f"{name}: non-finite entries differ from upstream's"
    extra = torch.as_tensor(extra, dtype=torch.float64).expand_as(e)
    allowed = tol.budget(e) + extra
    diff = torch.where(finite, (a - e).abs(), torch.zeros_like(e))
    bad = diff > allowed
    if bad.any():
        worst = tuple(torch.unravel_index(torch.argmax(torch.where(bad, diff - allowed, -1.0)), e.shape))
        worst = tuple(int(i) for i in worst)
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.numel()} entries outside the budget; worst at {_where(worst)}: "
            f"ours {a[worst].item():.9g}, upstream {e[worst].item():.9g}, |diff| {diff[worst].item():.3g} > "
            f"{allowed[worst].item():.3g} = atol {tol.atol:g} + rtol {tol.rtol:g} * |upstream| + error model "
            f"{extra[worst].item():.3g}"
        )


def assert_close_squared(actual: Tensor, expected: Tensor, tol: Tolerance, name: str, *, sq_error) -> None:
    """Non-negative roots of cancellation-prone sums (distances), compared as squares.

    ``|a^2 - b^2| <= tau (2 |b| + tau) + sq_error`` with ``tau`` the stated tolerance at b: the stated
    tolerance carried over to squares, plus the rounding bound of the squares themselves (for example
    ``2 * cdist_squared_error(x)`` when both sides use torch.cdist's matmul formula).
    """
    e = expected.double()
    tau = tol.budget(e)
    allowed_sq = tau * (2 * e.abs() + tau) + torch.as_tensor(sq_error, dtype=torch.float64).expand_as(e)
    assert_close(actual.double() ** 2, e**2, Tolerance(), f"{name} (squared)", extra=allowed_sq)


def assert_same_decisions(
    actual: Tensor, expected: Tensor, name: str, *, near_tie: Tensor, in_tied_set: Tensor | None = None
) -> int:
    """Discrete decisions equal upstream's, except at near-ties: returns how many differ there.

    ``near_tie`` (like ``expected``) marks where the fixture's own values put upstream's decision within the
    noise budget of an alternative; ``in_tied_set`` where our differing decision is such an alternative.
    Every accepted difference is named in a ``NearTieWarning``; any other difference fails.
    """
    actual = actual.detach().cpu()
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{name}: shape {tuple(actual.shape)}, upstream {tuple(expected.shape)}"
    )
    differ = actual != expected
    accepted = differ & near_tie & (in_tied_set if in_tied_set is not None else True)
    wrong = differ & ~accepted
    if wrong.any():
        at = [tuple(i) for i in wrong.nonzero().tolist()]
        shown = "; ".join(
            f"{_where(i)}: ours {actual[i].item()}, upstream {expected[i].item()}"
            + (" (near-tie, but ours is not in the tied set)" if bool(near_tie[i]) else " (no near-tie there)")
            for i in at[:6]
        )
        raise AssertionError(f"{name}: {len(at)} of {differ.numel()} decisions differ from upstream's: {shown}")
    if accepted.any():
        at = [tuple(i) for i in accepted.nonzero().tolist()]
        warnings.warn(
            NearTieWarning(
                f"{name}: {len(at)} decision(s) differ from upstream's at near-ties the fixture shows, each one of "
                f"the tied set: "
                + "; ".join(f"{_where(i)} ours {actual[i].item()}, upstream {expected[i].item()}" for i in at[:6])
            ),
            stacklevel=2,
        )
    return int(accepted.sum())


def assert_same_choice(actual: Tensor, expected: Tensor, scores: Tensor, noise, name: str) -> int:
    """Choices (..., P) of candidates along the last dim of upstream's ``scores`` (..., N): argmin/argmax
    labels (P = 1) or a ranked top-k (position p = p-th best). A differing choice is a near-tie when its
    score and upstream's choice's score differ by at most the sum of their ``noise`` budgets (..., N)."""
    noise = torch.as_tensor(noise, dtype=torch.float64).expand_as(scores)
    ours, theirs = actual.detach().cpu().clamp(0, scores.shape[-1] - 1), expected
    gap = (scores.double().gather(-1, ours) - scores.double().gather(-1, theirs)).abs()
    budget = noise.gather(-1, ours) + noise.gather(-1, theirs)
    tie = gap <= budget
    return assert_same_decisions(actual, expected, name, near_tie=tie, in_tied_set=tie)


def assert_same_selection(actual: Tensor, expected: Tensor, scores: Tensor, noise, name: str) -> int:
    """Selected sets (B, n) of indices into upstream's ``scores`` (B, N), compared as sets (order ignored).

    A frame only one side selects is a near-tie when its score lies within its own noise budget plus that
    of upstream's boundary (the lowest score upstream kept, or the highest it left out).
    """
    noise = torch.as_tensor(noise, dtype=torch.float64).expand_as(scores)
    scores = scores.double()
    n = scores.shape[-1]
    ours = torch.zeros(scores.shape, dtype=torch.bool).scatter(-1, actual.detach().cpu(), True)
    theirs = torch.zeros(scores.shape, dtype=torch.bool).scatter(-1, expected, True)
    finite = torch.isfinite(scores)
    kept = torch.where(theirs & finite, scores, torch.inf)
    left = torch.where(~theirs & finite, scores, -torch.inf)
    lowest_kept, lowest_at = kept.min(-1, keepdim=True)
    highest_left, highest_at = left.max(-1, keepdim=True)
    add_tie = scores >= lowest_kept - noise - noise.gather(-1, lowest_at.clamp(0, n - 1))
    drop_tie = scores <= highest_left + noise + noise.gather(-1, highest_at.clamp(0, n - 1))
    tie = torch.where(theirs, drop_tie, add_tie)
    return assert_same_decisions(ours, theirs, f"{name} (membership)", near_tie=tie, in_tied_set=tie)


def assert_close_or_tied(actual: Tensor, expected: Tensor, name: str, *, allowed, alternatives, tied) -> Tensor:
    """A value picked by a discrete decision (a minimum over a set decided by comparisons, say).

    ``actual`` must be within ``allowed`` of upstream's ``expected`` or, where the fixture shows that the
    decision was a near-tie, within ``allowed`` of one of the ``alternatives`` (..., K) whose ``tied`` is
    set. Returns where an alternative was accepted (each one named in a ``NearTieWarning``).
    """
    a, e = actual.detach().cpu().double(), expected.double()
    allowed = torch.as_tensor(allowed, dtype=torch.float64).expand_as(e)
    close = (a - e).abs() <= allowed
    matches = ((a[..., None] - alternatives.double()).abs() <= allowed[..., None]) & tied
    accepted = ~close & matches.any(-1)
    assert_close(torch.where(accepted, e, a), e, Tolerance(), name, extra=allowed)
    if accepted.any():
        at = [tuple(i) for i in accepted.nonzero().tolist()]
        warnings.warn(
            NearTieWarning(
                f"{name}: {len(at)} value(s) come from another side of a near-tie the fixture shows: "
                + "; ".join(f"{_where(i)} ours {a[i].item():.6g}, upstream {e[i].item():.6g}" for i in at[:6])
            ),
            stacklevel=2,
        )
    return accepted


def randn_kernel_error(z: Tensor, ulps: float = 4.0) -> Tensor:
    """How far a ``torch.randn`` value ``z`` can move between CPU kernels (ATEN_CPU_CAPABILITY).

    The uniform draws are the same bits everywhere; the Box-Muller transform z = r cos(2 pi u2) (or sin),
    r = sqrt(-2 ln u1), is not: the vectorised kernels use SLEEF's log/cos/sin, the scalar one libm's.
    With each routine within ``ulps`` ulp, and r at most sqrt(-2 ln u) (u1 >= u), each side is within
    (ulps + 2) u |z| + ulps u r of the exact value, so two sides differ by at most twice that.
    """
    u = UNIT_ROUNDOFF[z.dtype]
    r_max = (-2 * torch.log(torch.tensor(u, dtype=torch.float64))).sqrt()
    return 2 * u * ((ulps + 2) * z.double().abs() + ulps * r_max)


def assert_same_fsq_ids(actual: Tensor, expected: Tensor, fsq, z: Tensor, z_noise, name: str) -> int:
    """FSQ ids (...,) equal upstream's digit by digit, except where upstream's own FSQ input ``z`` (..., D)
    puts a digit within the noise of a rounding boundary; there ours may be the adjacent level.

    ``z_noise`` bounds how far our z may be from upstream's (its stated tolerance); the bound's slope,
    (L - 1) * bound_scale / 2, carries it to the rounded values, plus their own float32 rounding.
    """
    levels = torch.tensor(fsq.levels_list, dtype=torch.float64)
    half = torch.div(levels, 2, rounding_mode="floor")
    bounded = fsq.bound(z.float()).double()  # the value upstream rounded, as our FSQ computes it
    slope = (levels - 1) * fsq.bound_scale / 2
    noise = slope * torch.as_tensor(z_noise, dtype=torch.float64) + 4 * UNIT_ROUNDOFF[torch.float32] * slope
    margin = (bounded - bounded.floor() - 0.5).abs()  # distance to the nearest x.5, where rounding flips
    ours = (fsq.ids_to_codes(actual.detach().cpu()).double() * half).round()
    theirs = (fsq.ids_to_codes(expected).double() * half).round()
    adjacent = (ours - theirs).abs() == 1
    return assert_same_decisions(ours, theirs, f"{name} (FSQ digits)", near_tie=margin <= noise, in_tied_set=adjacent)


def assert_same_vq_ids(
    actual: Tensor, expected: Tensor, x: Tensor, codebook: Tensor, x_noise, name: str, *, normalize: bool = False
) -> int:
    """Nearest-codeword ids (...,) equal upstream's, except where upstream's own quantizer input ``x``
    (..., D) puts another codeword within the noise of upstream's choice; ours must then be that one.

    ``x_noise`` (like ``x``) bounds how far our x may be from upstream's (its stated tolerance). With
    ``normalize`` the search runs on x / |x| (S3Tokenizer v1), which moves by at most 2 |dx| / |x|. A change
    e of the searched vector moves each squared distance |x - E_k|^2 by at most e (2 |x - E_k| + e), and
    each side rounds the |x|^2 - 2 x.E + |E|^2 expansion in float32 (``cdist_squared_error``).
    """
    x = x.double()
    noise = torch.as_tensor(x_noise, dtype=torch.float64).expand_as(x).norm(dim=-1, keepdim=True)
    if normalize:
        noise = 2 * noise / x.norm(dim=-1, keepdim=True)
        x = torch.nn.functional.normalize(x, dim=-1)
    dist = torch.cdist(x, codebook.detach().double())  # (..., K)
    noise = noise * (2 * dist + noise) + 2 * cdist_squared_error(x.float(), codebook.detach().float())
    return assert_same_choice(actual[..., None], expected[..., None], dist**2, noise, name)
