// Python binding of the bias_act kernel: checks every argument, allocates the output, launches.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>

#include <optional>

#include "bias_act.h"

namespace electrogan {
namespace {

bool usable(const std::optional<torch::Tensor>& t) { return t.has_value() && t->defined() && t->numel() > 0; }

void check_reference(const torch::Tensor& x, const torch::Tensor& ref, const char* name) {
    TORCH_CHECK(ref.device() == x.device(), "bias_act: ", name, " must be on the same device as x");
    TORCH_CHECK(ref.scalar_type() == x.scalar_type(), "bias_act: ", name, " must have the same dtype as x");
    TORCH_CHECK(ref.sizes() == x.sizes() && ref.strides() == x.strides(),
                "bias_act: ", name, " must have the same shape and memory layout as x");
}

}  // namespace

// See BiasActParams in bias_act.h for what each grad mode computes.
torch::Tensor bias_act(const torch::Tensor& x, const std::optional<torch::Tensor>& b,
                       const std::optional<torch::Tensor>& x_ref, const std::optional<torch::Tensor>& y_ref,
                       int64_t grad, int64_t dim, int64_t act, double alpha, double gain, double clamp) {
    TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
    const auto dtype = x.scalar_type();
    TORCH_CHECK(dtype == torch::kHalf || dtype == torch::kFloat || dtype == torch::kDouble,
                "bias_act: x must be float16, float32 or float64, got ", dtype);
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be dense (contiguous or channels_last)");
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2, got ", grad);
    TORCH_CHECK(act >= kLinear && act <= kSwish, "bias_act: unknown activation number ", act);
    const bool has_bias = usable(b);
    if (has_bias) {
        TORCH_CHECK(x.dim() >= 1 && dim >= 0 && dim < x.dim(), "bias_act: dim ", dim, " out of range for ",
                    x.dim(), "-D x");
        TORCH_CHECK(b->dim() == 1 && b->size(0) == x.size(dim), "bias_act: b must be 1-D with x.shape[dim] = ",
                    x.size(dim), " elements");
        TORCH_CHECK(b->device() == x.device() && b->scalar_type() == dtype,
                    "bias_act: b must be on x's device with x's dtype");
        TORCH_CHECK(b->is_contiguous(), "bias_act: b must be contiguous");
    }
    if (usable(x_ref)) check_reference(x, *x_ref, "x_ref");
    if (usable(y_ref)) check_reference(x, *y_ref, "y_ref");
    TORCH_CHECK(grad == 0 || usable(x_ref) || usable(y_ref) || (act == kLinear && clamp < 0),
                "bias_act: the derivative modes need x_ref or y_ref");

    const c10::cuda::OptionalCUDAGuard guard(x.device());
    torch::Tensor out = torch::empty_like(x);  // keeps x's strides (dense tensors)
    TORCH_CHECK(out.strides() == x.strides(), "bias_act: could not allocate the output in x's layout");

    BiasActParams p{};
    p.x = x.data_ptr();
    p.b = has_bias ? b->data_ptr() : nullptr;
    p.x_ref = usable(x_ref) ? x_ref->data_ptr() : nullptr;
    p.y_ref = usable(y_ref) ? y_ref->data_ptr() : nullptr;
    p.out = out.data_ptr();
    p.numel = x.numel();
    p.stride_c = (has_bias && x.size(dim) > 1) ? x.stride(dim) : 1;  // a length-1 axis may have any stride
    p.size_c = has_bias ? x.size(dim) : 1;
    p.act = static_cast<int>(act);
    p.grad = static_cast<int>(grad);
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    launch_bias_act(p, dtype);
    return out;
}

}  // namespace electrogan

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "ElectroGAN fused bias + activation + gain + clamp (CUDA)";
    m.def("bias_act", &electrogan::bias_act,
          "bias_act(x, b, x_ref, y_ref, grad, dim, act, alpha, gain, clamp) -> Tensor; grad 0 = forward, "
          "1 = first derivative, 2 = second derivative",
          py::arg("x"), py::arg("b"), py::arg("x_ref"), py::arg("y_ref"), py::arg("grad"), py::arg("dim"),
          py::arg("act"), py::arg("alpha"), py::arg("gain"), py::arg("clamp"));
}
