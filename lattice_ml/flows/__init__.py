"""Normalizing flows for lattice fields, with hand-written vector-Jacobian products.

Every layer maps ``(x, logJ) -> (y, logJ + log|det dy/dx|)`` on arrays with the batch axis first.

* :mod:`.conv` — periodic convolutions (any D, odd kernel, channels last) and their vjps;
* :mod:`.activations` — pointwise activations and their vjps;
* :mod:`.coupling` — conv-net conditioners, affine coupling layers, checkerboard/stripe masks;
* :mod:`.flow` — a stack of layers with a Gaussian prior (forward, inverse, log-density, vjps);
* :mod:`.train` — reverse-KL, forward-KL and path-gradient training with :mod:`lattice_ml.optim`;
* :mod:`.gradient_flow` — gradient flows of loop actions for gauge fields (learned, few
  parameters, closed-form log-det, adjoint gradients);
* :mod:`.loop_functions` — class functions of loops (Re Tr W², Re (Tr W)², |Tr W|²) as flow
  terms, with closed-form group Laplacians;
* :mod:`.loop_pairs` — functions of two plaquettes sharing a link (Re A Re B, Im A Im B, the
  loop through the link twice) as flow terms, with closed-form group Laplacians;
* :mod:`.gradient_flow_inverse` — the exact vjp of the gradient flow's discrete inverse (forward
  KL and path gradients for gauge flows);
* :mod:`.trivializing` — Lüscher's trivialising map as such a flow (leading order, and the full
  next-to-leading order in 2D);
* :mod:`.u1_coupling` — gauge-equivariant coupling flows for 2D U(1) (masked plaquette
  couplings, NCP-mixture circle transforms, exact log-det).

Samplers that use a flow (independence Metropolis, flow HMC) live in :mod:`lattice_ml.samplers`.
"""

from .activations import Identity, LeakyReLU, Softplus, Tanh, activation
from .conv import PeriodicConv, init_conv_params
from .coupling import AffineCoupling, ConvNet, checkerboard_mask, stripe_mask
from .flow import Flow, effective_sample_size, make_phi4_flow, prior_log_prob
from .train import (MODES, FlowTrainer, ProgressPrinter, forward_kl_grads, path_gradient_grads,
                    reverse_kl_grads)
from .gradient_flow import GradientFlow
from .trivializing import luscher_coefficients, luscher_flow
from .u1_coupling import U1CouplingFlow, make_u1_coupling_flow

__all__ = ["Identity", "LeakyReLU", "Softplus", "Tanh", "activation", "PeriodicConv",
           "init_conv_params", "AffineCoupling", "ConvNet", "checkerboard_mask", "stripe_mask",
           "Flow", "effective_sample_size", "make_phi4_flow", "prior_log_prob", "FlowTrainer",
           "ProgressPrinter", "MODES", "forward_kl_grads", "path_gradient_grads",
           "reverse_kl_grads", "GradientFlow",
           "luscher_coefficients", "luscher_flow", "U1CouplingFlow", "make_u1_coupling_flow"]
