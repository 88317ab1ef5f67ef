"""Image optimisation shared by the optimisation-based methods (``gatys``, ``cmd``): the same optimisers, options,
initialisation and seeds, so the methods differ only in their objective.

``lbfgs`` is torch's L-BFGS with a strong-Wolfe line search run for ``iterations`` function evaluations (the Gatys
paper's optimiser); ``adam`` takes ``iterations`` steps of size ``lr`` in [0, 1] pixel units and clamps the image to
[0, 1] after each. ``init`` is the content image or uniform noise from ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from evalkit.adapter import Param

OPTIMISER_PARAMS: dict[str, Param] = {
    "iterations": Param(300, "optimiser iterations (L-BFGS: function evaluations)", low=1, high=100_000),
    "optimizer": Param("lbfgs", "lbfgs (the paper) or adam", ("lbfgs", "adam")),
    "lr": Param(0.02, "Adam learning rate in [0,1] pixel units (ignored by L-BFGS)", low=1e-8, high=10.0),
    "init": Param("content", "start from the content image or from uniform noise", ("content", "noise")),
}


def initial_image(content: torch.Tensor, init: str, seed: int) -> torch.Tensor:
    if init == "noise":
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return torch.rand(content.shape, generator=generator).to(content.device)
    return content.clone(memory_format=torch.contiguous_format)  # L-BFGS flattens its parameter with view()


def optimise(
    content: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor], seed: int, params: dict[str, Any]
) -> torch.Tensor:
    """Minimise ``objective(x)`` over the image ``x`` with the options in ``params`` (see :data:`OPTIMISER_PARAMS`)."""
    x = initial_image(content, params["init"], seed).requires_grad_(True)
    iterations = int(params["iterations"])
    if params["optimizer"] == "lbfgs":
        opt = torch.optim.LBFGS(
            [x],
            max_iter=iterations,
            history_size=50,
            tolerance_grad=0,
            tolerance_change=0,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = objective(x)
            loss.backward()
            return loss

        opt.step(closure)
    else:
        adam = torch.optim.Adam([x], lr=float(params["lr"]))
        for _ in range(iterations):
            adam.zero_grad()
            objective(x).backward()
            adam.step()
            with torch.no_grad():
                x.clamp_(0, 1)
    return x.detach().clamp(0, 1)
