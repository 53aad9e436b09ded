// upfirdn2d kernels.
//
// general: one thread per output pixel; visits only the taps that land on a non-inserted pixel
//          (every up-th tap), so any up/down/padding/filter size works, for any memory layout.
// tiled:   a block computes a 32x32 output tile of one channel image from a shared-memory copy of
//          the input window it needs (zero-filled outside the image), so each input pixel is read
//          from global memory once per tile instead of once per tap. Used for up, down in {1, 2}
//          and small filters on contiguous (NCHW) tensors.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

#include "common.h"
#include "upfirdn2d.h"

namespace electrogan {
namespace {

template <typename scalar_t>
__global__ void upfirdn2d_general_kernel(Upfirdn2dParams p) {
    using acc_t = typename OpMath<scalar_t>::type;
    const scalar_t* x = static_cast<const scalar_t*>(p.x);
    const acc_t* w = static_cast<const acc_t*>(p.w);
    scalar_t* out = static_cast<scalar_t*>(p.out);
    const int64_t total = static_cast<int64_t>(p.n) * p.c * p.out_h * p.out_w;
    const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;

    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
        int64_t t = idx;
        int ox, oy, ch, img;
        if (p.out_channels_last) {
            ch = static_cast<int>(t % p.c); t /= p.c;
            ox = static_cast<int>(t % p.out_w); t /= p.out_w;
            oy = static_cast<int>(t % p.out_h); img = static_cast<int>(t / p.out_h);
        } else {
            ox = static_cast<int>(t % p.out_w); t /= p.out_w;
            oy = static_cast<int>(t % p.out_h); t /= p.out_h;
            ch = static_cast<int>(t % p.c); img = static_cast<int>(t / p.c);
        }
        const scalar_t* plane = x + img * p.x_stride[0] + ch * p.x_stride[1];
        // Tap k of output o reads upsampled pixel o * down + k - pad; it is a real input pixel
        // only when that is a multiple of up, so start at the first such tap and step by up.
        const int base_y = oy * p.down_y - p.pad_y0;
        const int base_x = ox * p.down_x - p.pad_x0;
        const int ky0 = pos_mod(-base_y, p.up_y);
        const int kx0 = pos_mod(-base_x, p.up_x);
        acc_t acc = 0;
        for (int ky = ky0; ky < p.f_h; ky += p.up_y) {
            const int iy = (base_y + ky) / p.up_y;  // exact: base_y + ky is a multiple of up_y
            if (iy < 0 || iy >= p.in_h) continue;
            const scalar_t* row = plane + iy * p.x_stride[2];
            const acc_t* wrow = w + ky * p.f_w;
            for (int kx = kx0; kx < p.f_w; kx += p.up_x) {
                const int ix = (base_x + kx) / p.up_x;
                if (ix < 0 || ix >= p.in_w) continue;
                acc += static_cast<acc_t>(row[ix * p.x_stride[3]]) * wrow[kx];
            }
        }
        out[img * p.out_stride[0] + ch * p.out_stride[1] + oy * p.out_stride[2] + ox * p.out_stride[3]] =
            static_cast<scalar_t>(acc * static_cast<acc_t>(p.gain));
    }
}

// Input window (rows, columns) that a kUpfirdnTileH x kUpfirdnTileW output tile can touch.
__host__ __device__ inline int tile_input_extent(int tile, int down, int taps, int up) {
    return ((tile - 1) * down + taps - 1) / up + 1;
}

template <typename scalar_t>
__global__ void upfirdn2d_tiled_kernel(Upfirdn2dParams p, int tin_w, int tin_h) {
    using acc_t = typename OpMath<scalar_t>::type;
    extern __shared__ __align__(16) unsigned char smem[];
    acc_t* s_w = reinterpret_cast<acc_t*>(smem);
    acc_t* s_x = s_w + p.f_h * p.f_w;

    const scalar_t* x = static_cast<const scalar_t*>(p.x);
    const acc_t* w = static_cast<const acc_t*>(p.w);
    scalar_t* out = static_cast<scalar_t*>(p.out);
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int nthreads = blockDim.x * blockDim.y;
    const acc_t gain = static_cast<acc_t>(p.gain);

    for (int i = tid; i < p.f_h * p.f_w; i += nthreads) s_w[i] = w[i];

    const int ox0 = blockIdx.x * kUpfirdnTileW;
    const int oy0 = blockIdx.y * kUpfirdnTileH;
    const int ix_lo = ceil_div(ox0 * p.down_x - p.pad_x0, p.up_x);  // first input column the tile needs
    const int iy_lo = ceil_div(oy0 * p.down_y - p.pad_y0, p.up_y);
    const int planes = p.n * p.c;

    for (int plane_idx = blockIdx.z; plane_idx < planes; plane_idx += gridDim.z) {
        const int img = plane_idx / p.c;
        const int ch = plane_idx % p.c;
        const scalar_t* plane = x + img * p.x_stride[0] + ch * p.x_stride[1];

        __syncthreads();  // the previous plane's window is no longer being read
        for (int i = tid; i < tin_w * tin_h; i += nthreads) {
            const int iy = iy_lo + i / tin_w;
            const int ix = ix_lo + i % tin_w;
            acc_t v = 0;
            if (iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w)
                v = static_cast<acc_t>(plane[iy * p.x_stride[2] + ix * p.x_stride[3]]);
            s_x[i] = v;
        }
        __syncthreads();

        const int ox = ox0 + threadIdx.x;
        if (ox >= p.out_w) continue;  // no barrier until the next plane's first __syncthreads
        const int base_x = ox * p.down_x - p.pad_x0;
        const int kx0 = pos_mod(-base_x, p.up_x);
        for (int ty = threadIdx.y; ty < kUpfirdnTileH; ty += blockDim.y) {
            const int oy = oy0 + ty;
            if (oy >= p.out_h) break;
            const int base_y = oy * p.down_y - p.pad_y0;
            const int ky0 = pos_mod(-base_y, p.up_y);
            acc_t acc = 0;
            for (int ky = ky0; ky < p.f_h; ky += p.up_y) {
                const acc_t* srow = s_x + ((base_y + ky) / p.up_y - iy_lo) * tin_w;
                const acc_t* wrow = s_w + ky * p.f_w;
                for (int kx = kx0; kx < p.f_w; kx += p.up_x)
                    acc += srow[(base_x + kx) / p.up_x - ix_lo] * wrow[kx];
            }
            out[img * p.out_stride[0] + ch * p.out_stride[1] + oy * p.out_stride[2] + ox * p.out_stride[3]] =
                static_cast<scalar_t>(acc * gain);
        }
    }
}

template <typename scalar_t>
int launch_typed(const Upfirdn2dParams& p, bool allow_tiled) {
    using acc_t = typename OpMath<scalar_t>::type;
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const bool small_factors = p.up_x <= 2 && p.up_y <= 2 && p.down_x <= 2 && p.down_y <= 2;
    const bool small_filter = p.f_w <= kUpfirdnTiledMaxTaps && p.f_h <= kUpfirdnTiledMaxTaps;
    if (allow_tiled && small_factors && small_filter && !p.out_channels_last) {
        const int tin_w = tile_input_extent(kUpfirdnTileW, p.down_x, p.f_w, p.up_x);
        const int tin_h = tile_input_extent(kUpfirdnTileH, p.down_y, p.f_h, p.up_y);
        const size_t smem = sizeof(acc_t) * (static_cast<size_t>(tin_w) * tin_h + p.f_w * p.f_h);
        if (smem <= 48 * 1024) {
            const dim3 block(kUpfirdnTileW, kUpfirdnTileRows);
            const dim3 grid((p.out_w + kUpfirdnTileW - 1) / kUpfirdnTileW,
                            (p.out_h + kUpfirdnTileH - 1) / kUpfirdnTileH,
                            std::min(p.n * p.c, 65535));
            upfirdn2d_tiled_kernel<scalar_t><<<grid, block, smem, stream>>>(p, tin_w, tin_h);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
            return 1;
        }
    }
    const int threads = 256;
    const int64_t total = static_cast<int64_t>(p.n) * p.c * p.out_h * p.out_w;
    const int blocks = static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, 1 << 20));
    upfirdn2d_general_kernel<scalar_t><<<blocks, threads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return 0;
}

}  // namespace

int launch_upfirdn2d(const Upfirdn2dParams& p, c10::ScalarType dtype, bool allow_tiled) {
    if (static_cast<int64_t>(p.n) * p.c * p.out_h * p.out_w == 0) return 0;
    int tiled = 0;
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(dtype, "electrogan_upfirdn2d",
                                        [&] { tiled = launch_typed<scalar_t>(p, allow_tiled); });
    return tiled;
}

}  // namespace electrogan
