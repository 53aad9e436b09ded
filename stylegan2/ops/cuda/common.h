// Small helpers shared by our CUDA kernels (device code only).
#pragma once

#ifdef __CUDACC__

namespace electrogan {

// Accumulator ("op-math") type: half and float compute in float, double in double, so fp16 data
// is rounded once, when it is stored.
template <typename T> struct OpMath { using type = float; };
template <> struct OpMath<double> { using type = double; };

__device__ __forceinline__ float dev_exp(float v) { return expf(v); }
__device__ __forceinline__ double dev_exp(double v) { return exp(v); }
__device__ __forceinline__ float dev_expm1(float v) { return expm1f(v); }
__device__ __forceinline__ double dev_expm1(double v) { return expm1(v); }
__device__ __forceinline__ float dev_log1p(float v) { return log1pf(v); }
__device__ __forceinline__ double dev_log1p(double v) { return log1p(v); }
__device__ __forceinline__ float dev_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double dev_tanh(double v) { return tanh(v); }

// Floor division and a non-negative remainder for a possibly negative numerator, b > 0.
__device__ __forceinline__ int floor_div(int a, int b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }
__device__ __forceinline__ int ceil_div(int a, int b) { return -floor_div(-a, b); }
__device__ __forceinline__ int pos_mod(int a, int b) { int r = a % b; return r < 0 ? r + b : r; }

}  // namespace electrogan

#endif  // __CUDACC__
