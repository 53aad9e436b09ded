// bias_act kernel: one thread per element (grid-stride loop), templated on dtype and activation.
//
// The tensor is walked as flat memory; the bias index of element i is (i / stride_c) % size_c,
// which holds for any dense layout (contiguous NCHW, channels_last, ...), so the kernel never
// needs to know the layout.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

#include "bias_act.h"
#include "common.h"

namespace electrogan {
namespace {

// Each activation: f(z), its first and second derivative in z, and (for the piecewise-linear
// ones) the first derivative recovered from the output y (valid when gain > 0 and alpha >= 0).
template <int A> struct Act;

template <> struct Act<kLinear> {
    template <typename T> __device__ static T f(T z, T) { return z; }
    template <typename T> __device__ static T df(T, T) { return T(1); }
    template <typename T> __device__ static T d2f(T, T) { return T(0); }
    template <typename T> __device__ static T df_from_y(T, T) { return T(1); }
};

template <> struct Act<kRelu> {
    template <typename T> __device__ static T f(T z, T) { return z < T(0) ? T(0) : z; }
    template <typename T> __device__ static T df(T z, T) { return z > T(0) ? T(1) : T(0); }
    template <typename T> __device__ static T d2f(T, T) { return T(0); }
    template <typename T> __device__ static T df_from_y(T y, T) { return y > T(0) ? T(1) : T(0); }
};

template <> struct Act<kLrelu> {
    template <typename T> __device__ static T f(T z, T alpha) { return z > T(0) ? z : z * alpha; }
    template <typename T> __device__ static T df(T z, T alpha) { return z > T(0) ? T(1) : alpha; }
    template <typename T> __device__ static T d2f(T, T) { return T(0); }
    template <typename T> __device__ static T df_from_y(T y, T alpha) { return y > T(0) ? T(1) : alpha; }
};

template <> struct Act<kTanh> {
    template <typename T> __device__ static T f(T z, T) { return dev_tanh(z); }
    template <typename T> __device__ static T df(T z, T) { T t = dev_tanh(z); return T(1) - t * t; }
    template <typename T> __device__ static T d2f(T z, T) { T t = dev_tanh(z); return T(-2) * t * (T(1) - t * t); }
    template <typename T> __device__ static T df_from_y(T, T) { return T(0); }
};

template <typename T> __device__ __forceinline__ T sigmoid(T z) { return T(1) / (T(1) + dev_exp(-z)); }

template <> struct Act<kSigmoid> {
    template <typename T> __device__ static T f(T z, T) { return sigmoid(z); }
    template <typename T> __device__ static T df(T z, T) { T s = sigmoid(z); return s * (T(1) - s); }
    template <typename T> __device__ static T d2f(T z, T) { T s = sigmoid(z); return s * (T(1) - s) * (T(1) - T(2) * s); }
    template <typename T> __device__ static T df_from_y(T, T) { return T(0); }
};

// ELU with alpha = 1 (torch.nn.functional.elu's default).
template <> struct Act<kElu> {
    template <typename T> __device__ static T f(T z, T) { return z > T(0) ? z : dev_expm1(z); }
    template <typename T> __device__ static T df(T z, T) { return z > T(0) ? T(1) : dev_exp(z); }
    template <typename T> __device__ static T d2f(T z, T) { return z > T(0) ? T(0) : dev_exp(z); }
    template <typename T> __device__ static T df_from_y(T, T) { return T(0); }
};

// SELU constants (Klambauer et al. 2017), as torch.nn.functional.selu uses them.
constexpr double kSeluLambda = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;

template <> struct Act<kSelu> {
    template <typename T> __device__ static T f(T z, T) {
        return z > T(0) ? T(kSeluLambda) * z : T(kSeluLambda * kSeluAlpha) * dev_expm1(z);
    }
    template <typename T> __device__ static T df(T z, T) {
        return z > T(0) ? T(kSeluLambda) : T(kSeluLambda * kSeluAlpha) * dev_exp(z);
    }
    template <typename T> __device__ static T d2f(T z, T) {
        return z > T(0) ? T(0) : T(kSeluLambda * kSeluAlpha) * dev_exp(z);
    }
    template <typename T> __device__ static T df_from_y(T, T) { return T(0); }
};

// Softplus with beta = 1 and threshold = 20 (torch.nn.functional.softplus's defaults): linear above.
template <> struct Act<kSoftplus> {
    template <typename T> __device__ static T f(T z, T) { return z > T(20) ? z : dev_log1p(dev_exp(z)); }
    template <typename T> __device__ static T df(T z, T) { return z > T(20) ? T(1) : sigmoid(z); }
    template <typename T> __device__ static T d2f(T z, T) {
        if (z > T(20)) return T(0);
        T s = sigmoid(z);
        return s * (T(1) - s);
    }
    template <typename T> __device__ static T df_from_y(T, T) { return T(0); }
};

// Swish / SiLU: z * sigmoid(z).
template <> struct Act<kSwish> {
    template <typename T> __device__ static T f(T z, T) { return z * sigmoid(z); }
    template <typename T> __device__ static T df(T z, T) { T s = sigmoid(z); return s * (T(1) + z * (T(1) - s)); }
    template <typename T> __device__ static T d2f(T z, T) {
        T s = sigmoid(z);
        return s * (T(1) - s) * (T(2) + z * (T(1) - T(2) * s));
    }
    template <typename T> __device__ static T df_from_y(T, T) { return T(0); }
};

template <typename scalar_t, int A>
__global__ void bias_act_kernel(BiasActParams p) {
    using acc_t = typename OpMath<scalar_t>::type;
    const scalar_t* x = static_cast<const scalar_t*>(p.x);
    const scalar_t* b = static_cast<const scalar_t*>(p.b);
    const scalar_t* x_ref = static_cast<const scalar_t*>(p.x_ref);
    const scalar_t* y_ref = static_cast<const scalar_t*>(p.y_ref);
    scalar_t* out = static_cast<scalar_t*>(p.out);
    const acc_t alpha = static_cast<acc_t>(p.alpha);
    const acc_t gain = static_cast<acc_t>(p.gain);
    const acc_t clamp = static_cast<acc_t>(p.clamp);
    // The stored output was clamped to clamp rounded to scalar_t (e.g. 0.7 -> 0.69971 in half), so
    // the mask recovered from y compares against that value.
    const acc_t clamp_stored = static_cast<acc_t>(static_cast<scalar_t>(clamp));
    const bool has_clamp = p.clamp >= 0;
    const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
    const bool small = p.numel <= 0xFFFFFFFFLL;
    const uint32_t stride32 = static_cast<uint32_t>(p.stride_c);
    const uint32_t size32 = static_cast<uint32_t>(p.size_c);

    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel; i += step) {
        const acc_t v = static_cast<acc_t>(x[i]);
        acc_t bias = 0;
        if (b) {
            // 64-bit division is slow on GPUs; the common case fits in 32 bits (uniform branch).
            const int64_t c = small ? static_cast<int64_t>((static_cast<uint32_t>(i) / stride32) % size32)
                                    : (i / p.stride_c) % p.size_c;
            bias = static_cast<acc_t>(b[c]);
        }
        acc_t r;
        if (p.grad == 0) {
            r = Act<A>::f(v + bias, alpha) * gain;
            if (has_clamp) r = r > clamp ? clamp : (r < -clamp ? -clamp : r);  // NaN stays NaN
        } else {
            acc_t slope;
            bool pass = true;  // false where the clamp was active: no gradient flows there
            if (x_ref) {
                const acc_t z = static_cast<acc_t>(x_ref[i]) + bias;
                slope = (p.grad == 1) ? Act<A>::df(z, alpha) : Act<A>::d2f(z, alpha);
                if (has_clamp) {
                    const acc_t y = Act<A>::f(z, alpha) * gain;
                    pass = (y >= -clamp) && (y <= clamp);
                }
            } else if (y_ref) {
                const acc_t y = static_cast<acc_t>(y_ref[i]);
                slope = (p.grad == 1) ? Act<A>::df_from_y(y, alpha) : acc_t(0);
                if (has_clamp) pass = (y > -clamp_stored) && (y < clamp_stored);
            } else {  // linear without clamp needs no reference
                slope = (p.grad == 1) ? acc_t(1) : acc_t(0);
            }
            r = pass ? v * gain * slope : acc_t(0);
        }
        out[i] = static_cast<scalar_t>(r);
    }
}

template <typename scalar_t, int A>
void launch_typed(const BiasActParams& p) {
    const int threads = 256;
    const int64_t wanted = (p.numel + threads - 1) / threads;
    const int blocks = static_cast<int>(std::min<int64_t>(wanted, 65535));
    bias_act_kernel<scalar_t, A><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_for_act(const BiasActParams& p) {
    switch (p.act) {
        case kLinear: launch_typed<scalar_t, kLinear>(p); break;
        case kRelu: launch_typed<scalar_t, kRelu>(p); break;
        case kLrelu: launch_typed<scalar_t, kLrelu>(p); break;
        case kTanh: launch_typed<scalar_t, kTanh>(p); break;
        case kSigmoid: launch_typed<scalar_t, kSigmoid>(p); break;
        case kElu: launch_typed<scalar_t, kElu>(p); break;
        case kSelu: launch_typed<scalar_t, kSelu>(p); break;
        case kSoftplus: launch_typed<scalar_t, kSoftplus>(p); break;
        case kSwish: launch_typed<scalar_t, kSwish>(p); break;
        default: TORCH_CHECK(false, "bias_act: unknown activation number ", p.act);
    }
}

}  // namespace

void launch_bias_act(const BiasActParams& p, c10::ScalarType dtype) {
    if (p.numel == 0) return;
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(dtype, "electrogan_bias_act", [&] { launch_for_act<scalar_t>(p); });
}

}  // namespace electrogan
