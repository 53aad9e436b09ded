// upfirdn2d: per image channel, insert (up - 1) zeros after every pixel, pad (negative = crop),
// correlate with the FIR taps w, scale by gain, keep every down-th pixel.
//
// Shared between upfirdn2d.cpp (argument checks, Python binding) and upfirdn2d.cu (the kernels).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace electrogan {

struct Upfirdn2dParams {
    const void* x;      // input [n, c, in_h, in_w], any strides
    const void* w;      // taps [f_h, f_w], contiguous, in correlation order, float (double for double x)
    void* out;          // output [n, c, out_h, out_w]
    int n, c, in_h, in_w, out_h, out_w;
    int64_t x_stride[4];    // strides of x in elements (n, c, h, w)
    int64_t out_stride[4];  // strides of out in elements
    int up_x, up_y, down_x, down_y;
    int pad_x0, pad_y0;     // leading padding in upsampled pixels (the trailing pads only size the output)
    int f_w, f_h;
    bool out_channels_last; // walk the output with the channel index fastest (coalesced for NHWC)
    double gain;
};

// Output tile of the shared-memory kernel (pixels); a block is kTileW x kTileRows threads.
constexpr int kUpfirdnTileW = 32;
constexpr int kUpfirdnTileH = 32;
constexpr int kUpfirdnTileRows = 8;
// The tiled kernel is used for up, down in {1, 2} and filters up to this many taps per axis.
constexpr int kUpfirdnTiledMaxTaps = 24;

// Chooses the tiled or the general kernel and runs it on the current CUDA stream (upfirdn2d.cu).
// Returns 1 when the tiled kernel ran, 0 for the general one (for tests and benchmarks).
int launch_upfirdn2d(const Upfirdn2dParams& p, c10::ScalarType dtype, bool allow_tiled);

}  // namespace electrogan
