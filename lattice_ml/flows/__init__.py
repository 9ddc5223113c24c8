"""Normalizing flows for lattice fields, with hand-written vector-Jacobian products.

Every layer maps ``(x, logJ) -> (y, logJ + log|det dy/dx|)`` on arrays with the batch axis first.

* :mod:`.conv` — periodic convolutions (any D, odd kernel, channels last) and their vjps;
* :mod:`.activations` — pointwise activations and their vjps;
* :mod:`.coupling` — conv-net conditioners, affine coupling layers, checkerboard/stripe masks;
* :mod:`.flow` — a stack of layers with a Gaussian prior (forward, inverse, log-density, vjps);
* :mod:`.train` — reverse-KL and forward-KL training with :mod:`lattice_ml.optim`;
* :mod:`.gradient_flow` — gradient flows of loop actions for gauge fields (learned, few
  parameters, closed-form log-det, adjoint gradients);
* :mod:`.trivializing` — Lüscher's leading-order trivialising map as such a flow;
* :mod:`.u1_coupling` — gauge-equivariant coupling flows for 2D U(1) (masked plaquette
  couplings, NCP-mixture circle transforms, exact log-det).

Samplers that use a flow (independence Metropolis, flow HMC) live in :mod:`lattice_ml.samplers`.
"""

from .activations import Identity, LeakyReLU, Softplus, Tanh, activation
from .conv import PeriodicConv, init_conv_params
from .coupling import AffineCoupling, ConvNet, checkerboard_mask, stripe_mask
from .flow import Flow, effective_sample_size, make_phi4_flow, prior_log_prob
from .train import FlowTrainer, ProgressPrinter, forward_kl_grads, reverse_kl_grads
from .gradient_flow import GradientFlow
from .trivializing import luscher_coefficients, luscher_flow
from .u1_coupling import U1CouplingFlow, make_u1_coupling_flow

__all__ = ["Identity", "LeakyReLU", "Softplus", "Tanh", "activation", "PeriodicConv",
           "init_conv_params", "AffineCoupling", "ConvNet", "checkerboard_mask", "stripe_mask",
           "Flow", "effective_sample_size", "make_phi4_flow", "prior_log_prob", "FlowTrainer",
           "ProgressPrinter", "forward_kl_grads", "reverse_kl_grads", "GradientFlow",
           "luscher_coefficients", "luscher_flow", "U1CouplingFlow", "make_u1_coupling_flow"]
