"""The modular kernel contract.

    [Router] -> [PrepareFinalize.prepare] -> [Experts.apply] -> [PrepareFinalize.finalize]
     top-k       dispatch tokens to the        permute, both       combine back to [T, H]
                 ranks owning their experts    GEMMs, activation,
                 (local: nothing to do)        top-k reduction

Shape letters: T tokens, H hidden size, K top-k, E experts (global), E_l local experts.
A modular experts class takes routed tokens; a monolithic one takes router logits and routes
inside. Experts quantize their own inputs where their scheme quantizes activations, and size
their own workspaces. ``FusedMoEKernel`` combines one prepare/finalize with one experts object
and refuses a pair whose activation formats or kinds do not fit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from moe_oracle.errors import MoEOracleError

if TYPE_CHECKING:
    import torch

    from moe_oracle.config.moe import MoEConfig
    from moe_oracle.kernel.quant_config import QuantConfig
    from moe_oracle.kernel.weights import KernelWeights


class KernelAssemblyError(MoEOracleError, TypeError):
    """A prepare/finalize and an experts object that cannot work together."""


class PrepareResult(NamedTuple):
    """What experts receive after dispatch.

    hidden: ``[T, H]`` (standard) or ``[E_l, max_tokens, H]`` (batched).
    topk_weights: ``[T, K]`` float32. topk_ids: ``[T, K]`` global expert ids.
    expert_num_tokens: ``[E_l]`` valid rows per expert in the batched format, else ``None``.
    """

    hidden: torch.Tensor
    topk_weights: torch.Tensor
    topk_ids: torch.Tensor
    expert_num_tokens: torch.Tensor | None = None


class PrepareFinalize(ABC):
    """Moves tokens to the experts that own them and the results back.

    Subclasses set ``activation_format`` and implement ``prepare``/``finalize``. An expert
    parallel implementation dispatches over ``torch.distributed`` in ``prepare`` and combines in
    ``finalize``; the local one does neither.
    """

    activation_format: ClassVar[str] = "standard"

    @abstractmethod
    def prepare(self, hidden: torch.Tensor, topk_weights: torch.Tensor,
                topk_ids: torch.Tensor) -> PrepareResult: ...

    @abstractmethod
    def finalize(self, expert_output: torch.Tensor, prepared: PrepareResult) -> torch.Tensor:
        """Return the combined ``[T, H]`` output (a new tensor or ``expert_output`` itself)."""


class LocalPrepareFinalize(PrepareFinalize):
    """No expert-parallel all-to-all: the tokens are already where the experts are."""

    activation_format: ClassVar[str] = "standard"

    def prepare(self, hidden: torch.Tensor, topk_weights: torch.Tensor,
                topk_ids: torch.Tensor) -> PrepareResult:
        return PrepareResult(hidden, topk_weights, topk_ids)

    def finalize(self, expert_output: torch.Tensor, prepared: PrepareResult) -> torch.Tensor:
        return expert_output


class Experts(ABC):  # noqa: B024  (abstract through its two subclasses)
    """Base of every backend's experts. Built once per loaded weights.

    Subclass contract: set ``activation_format`` (and ``monolithic`` through the two bases
    below); implement ``apply``; override ``workspace_shapes`` if the kernel needs scratch
    buffers, so their size is decided here and not by the caller.
    """

    activation_format: ClassVar[str] = "standard"
    monolithic: ClassVar[bool] = False

    def __init__(self, config: MoEConfig, quant_config: QuantConfig, weights: KernelWeights) -> None:
        self.config = config
        self.quant_config = quant_config
        self.weights = weights

    def workspace_shapes(self, num_tokens: int) -> dict[str, tuple[int, ...]]:
        """Scratch buffers ``apply`` allocates for ``num_tokens`` tokens, by name."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.weights.backend!r} layout={self.weights.layout!r}>"


class ExpertsModular(Experts):
    """Experts that take routed tokens."""

    @abstractmethod
    def apply(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              expert_num_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``[T, H]`` in ``hidden.dtype``: sum over k of weight[t, k] * expert_{ids[t, k]}(x_t).

        hidden: ``[T, H]`` compute dtype. topk_weights: ``[T, K]`` float32. topk_ids: ``[T, K]``
        int32/int64 global ids. expert_map: ``[E]`` int32 global -> local id, -1 for experts on
        other ranks (they contribute zero); ``None`` means every expert is local.
        """


class ExpertsMonolithic(Experts):
    """Experts that take router logits and route inside the kernel."""

    monolithic: ClassVar[bool] = True

    @abstractmethod
    def apply(self, hidden: torch.Tensor, router_logits: torch.Tensor, *,
              expert_map: torch.Tensor | None = None,
              score_correction_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``[T, H]``; router_logits ``[T, E]``; routing follows ``config.routing``."""


class FusedMoEKernel:
    """One prepare/finalize plus one experts object, checked to fit."""

    def __init__(self, prepare_finalize: PrepareFinalize, experts: Experts) -> None:
        if not isinstance(prepare_finalize, PrepareFinalize):
            raise KernelAssemblyError(f"prepare_finalize must be a PrepareFinalize, got {type(prepare_finalize).__name__}")
        if not isinstance(experts, (ExpertsModular, ExpertsMonolithic)):
            raise KernelAssemblyError(f"experts must subclass ExpertsModular or ExpertsMonolithic, got {type(experts).__name__}")
        if prepare_finalize.activation_format != experts.activation_format:
            raise KernelAssemblyError(
                f"{type(prepare_finalize).__name__} produces the {prepare_finalize.activation_format} format but "
                f"{type(experts).__name__} takes the {experts.activation_format} format")
        if experts.monolithic and not isinstance(prepare_finalize, LocalPrepareFinalize):
            raise KernelAssemblyError(
                f"monolithic {type(experts).__name__} routes inside the kernel and needs LocalPrepareFinalize, "
                f"got {type(prepare_finalize).__name__}")
        self.prepare_finalize = prepare_finalize
        self.experts = experts

    @property
    def monolithic(self) -> bool:
        return self.experts.monolithic

    def forward_routed(self, hidden: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, *,
                       expert_map: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(self.experts, ExpertsModular):
            raise KernelAssemblyError(f"{type(self.experts).__name__} is monolithic: call forward_logits")
        prepared = self.prepare_finalize.prepare(hidden, topk_weights, topk_ids)
        out = self.experts.apply(prepared.hidden, prepared.topk_weights, prepared.topk_ids,
                                 expert_map=expert_map, expert_num_tokens=prepared.expert_num_tokens)
        return self.prepare_finalize.finalize(out, prepared)

    def forward_logits(self, hidden: torch.Tensor, router_logits: torch.Tensor, *,
                       expert_map: torch.Tensor | None = None,
                       score_correction_bias: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(self.experts, ExpertsMonolithic):
            raise KernelAssemblyError(f"{type(self.experts).__name__} is modular: route first, then forward_routed")
        return self.experts.apply(hidden, router_logits, expert_map=expert_map,
                                  score_correction_bias=score_correction_bias)

    def __repr__(self) -> str:
        return f"FusedMoEKernel({type(self.prepare_finalize).__name__}, {self.experts!r})"
