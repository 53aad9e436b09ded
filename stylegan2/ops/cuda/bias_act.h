// bias_act: y = clamp(gain * act(x + b), -clamp, +clamp), element-wise, and its derivatives.
//
// Shared between bias_act.cpp (argument checks, Python binding) and bias_act.cu (the kernel).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace electrogan {

// Activation numbers; they equal ActivationSpec.cuda_idx in stylegan2/ops/bias_act.py.
enum BiasActActivation : int {
    kLinear = 1,
    kRelu = 2,
    kLrelu = 3,
    kTanh = 4,
    kSigmoid = 5,
    kElu = 6,
    kSelu = 7,
    kSoftplus = 8,
    kSwish = 9,
};

// What the kernel computes (the "grad mode").
//   0: forward       out = clamp(gain * f(x + b))
//   1: 1st deriv.    out = x * gain * f'(z) * m     (x holds dL/dy; z and m come from the reference)
//   2: 2nd deriv.    out = x * gain * f''(z) * m    (x holds dy * ddz, the product of the incoming
//                                                    gradient and the gradient-of-gradient)
// m is the clamp mask: 1 where the clamp did not bite, else 0.
// The reference tensor is either x_ref (the input before the bias, so z = x_ref + b) or y_ref
// (the forward output; enough for linear/relu/lrelu, whose slope follows from the sign of y when
// gain > 0, and for the clamp mask).
struct BiasActParams {
    const void* x;       // input of this mode (see above), numel elements
    const void* b;       // bias, size_c elements, or nullptr
    const void* x_ref;   // or nullptr
    const void* y_ref;   // or nullptr
    void* out;           // numel elements, same strides as x
    int64_t numel;
    int64_t stride_c;    // memory stride of the bias dimension (elements)
    int64_t size_c;      // length of the bias dimension
    int act;             // BiasActActivation
    int grad;            // 0, 1 or 2
    double alpha;        // lrelu negative slope
    double gain;
    double clamp;        // < 0: no clamp
};

// Runs the kernel on the current CUDA stream for a half, float or double tensor (bias_act.cu).
void launch_bias_act(const BiasActParams& p, c10::ScalarType dtype);

}  // namespace electrogan
