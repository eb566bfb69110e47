//! Fused cross-entropy: loss and gradient in two sweeps, with PyTorch's semantics.
