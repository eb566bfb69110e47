//! Output-layer updates: rank-1 and rank-k updates, weight and bias gradients, SGD, linear
//! forward/backward, and the `OutputLayer` train step.
