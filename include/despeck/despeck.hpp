// despeck/despeck.hpp — the umbrella header: tensors, tape, ops, the model, optimisers.
//
// It pulls in Eigen only. File formats (checkpoints, rasters), the CLI and interop are separate
// headers under despeck/io/ and friends, so a program that only needs the network does not pay
// for their dependencies at compile time.
#pragma once

#include "despeck/error.hpp"
#include "despeck/runtime.hpp"
#include "despeck/random.hpp"
#include "despeck/tensor.hpp"
#include "despeck/autodiff/tape.hpp"
#include "despeck/kernels/conv2d.hpp"
#include "despeck/ops/batch_norm.hpp"
#include "despeck/ops/conv2d.hpp"
#include "despeck/ops/elementwise.hpp"
#include "despeck/ops/mse.hpp"
#include "despeck/ops/relu.hpp"
#include "despeck/ops/total_variation.hpp"
#include "despeck/nn/parameters.hpp"
#include "despeck/nn/despecknet.hpp"
#include "despeck/optim/adam.hpp"
#include "despeck/optim/schedule.hpp"
