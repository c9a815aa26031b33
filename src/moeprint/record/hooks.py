"""Forward hooks that capture router decisions of every MoE layer (tensors only, no I/O).

One `RouterHooks` hooks each MoE block the adapter finds:
  - normally the router module (it sees every forward call: prefill N = B*S rows, then N = B per step);
  - for fused blocks whose router is never called (fused kernels, `MoEAdapter.fused_moe_classes`) the block itself, whose
    output's second element is the router logits; top-k + weights are recomputed from them.
Each call appends one `moeprint.types.RouterCapture` ((N, k) ids and weights, optional (N, E) logits and
(N, k) expert output norms) to a per-layer list, on the model's device: nothing is converted or copied to the host in the hook.
Hooks return None, so the model's computation is untouched.
"""

from __future__ import annotations

from typing import Any

import torch

from moeprint.adapters.base import MoEAdapter
from moeprint.errors import MoeprintError
from moeprint.types import RouterCapture


class RouterHooks:
    def __init__(self, model: torch.nn.Module, adapter: MoEAdapter, logits: bool = False, expert_norms: bool = False):
        self.adapter = adapter
        self.blocks = adapter.moe_blocks(model)
        self.top_k = adapter.top_k(model.config)
        self.route = adapter.routing(model.config)  # logits -> (ids, weights) with the config's routing options
        self.with_logits = logits
        self.with_norms = expert_norms
        if expert_norms and adapter.expert_forward is None:
            raise MoeprintError(f"expert norms are not implemented for {adapter.name} models.")
        if expert_norms and any(adapter.is_fused(b) for _, b in self.blocks):
            raise MoeprintError(
                "expert norms need the experts' weights in plain form; this model runs fused quantized "
                "kernels (load it dequantised, e.g. on CPU) or record without --expert-norms."
            )
        self.calls: list[list[RouterCapture]] = [[] for _ in self.blocks]
        self._handles: list[Any] = []
        self.enabled = True

    # ---- attach / detach ----------------------------------------------------------------
    def attach(self) -> RouterHooks:
        for slot, (_, block) in enumerate(self.blocks):
            if self.adapter.is_fused(block):
                self._handles.append(block.register_forward_hook(self._fused_hook(slot)))
            else:
                router = self.adapter.router(block)
                self._handles.append(router.register_forward_hook(self._router_hook(slot, block)))
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> RouterHooks:
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    # ---- hooks --------------------------------------------------------------------------
    def _router_hook(self, slot: int, block: torch.nn.Module):
        def hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
            if not self.enabled:
                return None
            ids, weights, logits = self.adapter.router_output_to_topk(output, self.top_k)
            if self.with_logits and logits is None:  # old router form: recompute from the weights
                hidden = args[0].reshape(-1, args[0].shape[-1])
                logits = torch.nn.functional.linear(hidden, module.weight, module.bias)
            self._append(slot, block, args[0], ids, weights, logits)
            return None

        return hook

    def _fused_hook(self, slot: int):
        def hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
            if not self.enabled:
                return None
            logits = output[1]  # (N, E): the fused block returns (out, router_logits)
            ids, weights = self.route(logits, self.top_k)
            self._append(slot, module, args[0], ids, weights, logits)
            return None

        return hook

    def _append(self, slot, block, hidden, ids, weights, logits) -> None:
        # Keep the model's own tensors as they are (generate runs under no_grad); dtype conversion and the
        # host copy happen once per batch in the runner, so a call costs a record and a list append.
        norms = None
        if self.with_norms:
            with torch.no_grad():
                hidden = hidden.detach().reshape(ids.shape[0], -1)  # (N, H)
                norms = self._expert_norms(self.adapter.experts(block), hidden, ids)  # (N, k)
        kept_logits = logits.detach().reshape(ids.shape[0], -1) if self.with_logits else None  # (N, E)
        self.calls[slot].append(RouterCapture(ids, weights, kept_logits, norms))  # ids, weights: (N, k)

    def _expert_norms(self, experts: torch.nn.Module, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """||f_j(x)|| for each selected expert j of each row, routed rows only: (N, k)."""
        norms = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)  # (N, k)
        ids_long = ids.long()
        for expert in torch.unique(ids_long).tolist():
            rows, slots = torch.nonzero(ids_long == expert, as_tuple=True)
            out = self.adapter.expert_forward(experts, hidden[rows], expert)  # (n, H)
            norms[rows, slots] = out.float().norm(dim=-1)
        return norms

    # ---- results ------------------------------------------------------------------------
    def reset(self) -> None:
        self.calls = [[] for _ in self.blocks]

    def take(self) -> list[list[RouterCapture]]:
        """Per layer, the list of captured calls (on device); clears the capture."""
        calls, self.calls = self.calls, [[] for _ in self.blocks]
        return calls

    @property
    def layers(self) -> list[int]:
        return [layer for layer, _ in self.blocks]
