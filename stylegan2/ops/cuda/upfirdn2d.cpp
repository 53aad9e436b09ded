// Python binding of the upfirdn2d kernels: checks every argument, prepares the taps, allocates the
// output in the input's memory layout, launches.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "upfirdn2d.h"

namespace electrogan {

// Output size along one axis: (in * up + pad0 + pad1 - taps) / down + 1 (floor division).
static int64_t upfirdn_out_size(int64_t in, int64_t up, int64_t pad0, int64_t pad1, int64_t taps, int64_t down) {
    const int64_t span = in * up + pad0 + pad1 - taps;
    return span < 0 ? 0 : span / down + 1;
}

// See upfirdn2d.h. flip = false: true convolution with f; flip = true: correlation.
// Returns (out, tiled) where tiled says which kernel ran.
std::tuple<torch::Tensor, int64_t> upfirdn2d(const torch::Tensor& x, const torch::Tensor& f, int64_t up_x,
                                             int64_t up_y, int64_t down_x, int64_t down_y, int64_t pad_x0,
                                             int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip,
                                             double gain, bool allow_tiled) {
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be 4-D [N, C, H, W], got ", x.dim(), "-D");
    const auto dtype = x.scalar_type();
    TORCH_CHECK(dtype == torch::kHalf || dtype == torch::kFloat || dtype == torch::kDouble,
                "upfirdn2d: x must be float16, float32 or float64, got ", dtype);
    TORCH_CHECK(f.dim() == 2 && f.numel() > 0, "upfirdn2d: f must be a non-empty 2-D filter [f_h, f_w]");
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on x's device");
    TORCH_CHECK(at::isFloatingType(f.scalar_type()), "upfirdn2d: f must be floating point");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: up and down must be >= 1");
    const int64_t f_h = f.size(0), f_w = f.size(1);
    const int64_t out_w = upfirdn_out_size(x.size(3), up_x, pad_x0, pad_x1, f_w, down_x);
    const int64_t out_h = upfirdn_out_size(x.size(2), up_y, pad_y0, pad_y1, f_h, down_y);
    TORCH_CHECK(out_w >= 1 && out_h >= 1, "upfirdn2d: the padding leaves no output pixels");
    const int64_t big = std::numeric_limits<int>::max() / 4;
    TORCH_CHECK(x.size(0) * x.size(1) < big && x.size(2) * up_y + std::abs(pad_y0) + f_h < big &&
                    x.size(3) * up_x + std::abs(pad_x0) + f_w < big && out_h * down_y < big &&
                    out_w * down_x < big && std::abs(pad_x1) < big && std::abs(pad_y1) < big,
                "upfirdn2d: sizes too large for 32-bit pixel indices");

    const c10::cuda::OptionalCUDAGuard guard(x.device());
    // Taps in correlation order, in the accumulator precision.
    const auto acc_type = dtype == torch::kDouble ? torch::kDouble : torch::kFloat;
    torch::Tensor w = (flip ? f : f.flip({0, 1})).to(acc_type).contiguous();
    const bool channels_last = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
    torch::Tensor out = torch::empty({x.size(0), x.size(1), out_h, out_w},
                                     x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                             : at::MemoryFormat::Contiguous));

    Upfirdn2dParams p{};
    p.x = x.data_ptr();
    p.w = w.data_ptr();
    p.out = out.data_ptr();
    p.n = static_cast<int>(x.size(0));
    p.c = static_cast<int>(x.size(1));
    p.in_h = static_cast<int>(x.size(2));
    p.in_w = static_cast<int>(x.size(3));
    p.out_h = static_cast<int>(out_h);
    p.out_w = static_cast<int>(out_w);
    for (int d = 0; d < 4; ++d) {
        p.x_stride[d] = x.stride(d);
        p.out_stride[d] = out.stride(d);
    }
    p.up_x = static_cast<int>(up_x);
    p.up_y = static_cast<int>(up_y);
    p.down_x = static_cast<int>(down_x);
    p.down_y = static_cast<int>(down_y);
    p.pad_x0 = static_cast<int>(pad_x0);
    p.pad_y0 = static_cast<int>(pad_y0);
    p.f_w = static_cast<int>(f_w);
    p.f_h = static_cast<int>(f_h);
    p.out_channels_last = channels_last;
    p.gain = gain;
    const int tiled = launch_upfirdn2d(p, dtype, allow_tiled);
    return std::make_tuple(out, static_cast<int64_t>(tiled));
}

}  // namespace electrogan

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "ElectroGAN FIR up/down-sampling (CUDA)";
    m.def("upfirdn2d", &electrogan::upfirdn2d,
          "upfirdn2d(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip, gain, allow_tiled)"
          " -> (Tensor, tiled)",
          py::arg("x"), py::arg("f"), py::arg("up_x"), py::arg("up_y"), py::arg("down_x"), py::arg("down_y"),
          py::arg("pad_x0"), py::arg("pad_x1"), py::arg("pad_y0"), py::arg("pad_y1"), py::arg("flip"),
          py::arg("gain"), py::arg("allow_tiled") = true);
}
