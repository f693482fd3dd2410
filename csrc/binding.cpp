// pybind11 binding of the CUDA kernels: named checks on every tensor (device, dtype, shape, last-dim stride),
// then a launcher from launch.h on the current stream. No math here. The Python wrapper
// (slimkern/backends/cuda/ops.py) checks the same things first with friendlier messages and allocates outputs;
// these checks keep the extension safe when it is called directly. Only the headers it needs, not
// torch/extension.h (the whole C++ API: about 4x the compile time) nor ATen/cuda/CUDAContext.h (it needs the
// cuBLAS and cuSPARSE headers, which minimal toolkits lack).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/utils/pybind.h>

#include <optional>
#include <string>

#include "launch.h"

namespace {

using Opt = std::optional<at::Tensor>;

void check_tensor(const at::Tensor& t, const char* name, const at::Tensor& like, int64_t dim) {
  TORCH_CHECK(t.is_cuda(), "slimkern cuda: ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.device() == like.device(), "slimkern cuda: ", name, " is on ", t.device(), ", expected ",
              like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "slimkern cuda: ", name, " has dtype ", t.scalar_type(),
              ", expected ", like.scalar_type());
  TORCH_CHECK(t.dim() == dim, "slimkern cuda: ", name, " must be ", dim, "-D, got shape ", t.sizes());
  TORCH_CHECK(t.stride(-1) == 1, "slimkern cuda: ", name, " needs last-dim stride 1, got strides ", t.strides());
}

slimkern::DType kernel_dtype(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf, "slimkern cuda: ", name,
              " has dtype ", t.scalar_type(), "; the kernels take bfloat16 or float16");
  return t.scalar_type() == at::kBFloat16 ? slimkern::DType::kBFloat16 : slimkern::DType::kFloat16;
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "slimkern cuda: ", op, " launch failed: ", cudaGetErrorString(err));
}

const void* ptr_or_null(const Opt& t) { return t.has_value() ? t->data_ptr() : nullptr; }

void sliced_linear(const at::Tensor& x, const at::Tensor& weight, const Opt& bias, const Opt& value_weight,
                   const Opt& value_bias, const Opt& residual, const Opt& gamma, at::Tensor& out, int64_t n_out,
                   int64_t k_in, bool gelu, int64_t qkv_heads, int64_t seq_len) {
  const slimkern::DType dtype = kernel_dtype(x, "x");
  check_tensor(x, "x", x, 2);
  check_tensor(weight, "weight", x, 2);
  const int64_t m = x.size(0);
  TORCH_CHECK(1 <= k_in && k_in <= weight.size(1) && k_in <= x.size(1), "slimkern cuda: k_in=", k_in,
              " out of range for x ", x.sizes(), " and weight ", weight.sizes());
  TORCH_CHECK(1 <= n_out && n_out <= weight.size(0), "slimkern cuda: n_out=", n_out, " out of range for weight ",
              weight.sizes());
  if (bias) {
    check_tensor(*bias, "bias", x, 1);
    TORCH_CHECK(bias->size(0) >= n_out, "slimkern cuda: bias has fewer than n_out=", n_out, " entries");
  }
  if (value_weight) {
    check_tensor(*value_weight, "value_weight", x, 2);
    TORCH_CHECK(value_weight->size(0) >= n_out && value_weight->size(1) >= k_in,
                "slimkern cuda: value_weight ", value_weight->sizes(), " is smaller than [n_out, k_in]");
    TORCH_CHECK(!gelu && qkv_heads == 0, "slimkern cuda: the gated FFN takes no GELU and no qkv output");
  }
  TORCH_CHECK(!value_bias || value_weight, "slimkern cuda: value_bias needs value_weight");
  if (value_bias) {
    check_tensor(*value_bias, "value_bias", x, 1);
    TORCH_CHECK(value_bias->size(0) >= n_out, "slimkern cuda: value_bias has fewer than n_out=", n_out, " entries");
  }
  TORCH_CHECK(!gamma || residual, "slimkern cuda: gamma (LayerScale) needs residual");
  if (residual) {
    check_tensor(*residual, "residual", x, 2);
    TORCH_CHECK(residual->size(0) == m && residual->size(1) == n_out, "slimkern cuda: residual must be [", m, ", ",
                n_out, "], got ", residual->sizes());
  }
  if (gamma) {
    check_tensor(*gamma, "gamma", x, 1);
    TORCH_CHECK(gamma->size(0) == n_out, "slimkern cuda: gamma must be [", n_out, "], got ", gamma->sizes());
  }
  slimkern::LinearParams p{};
  if (qkv_heads > 0) {
    TORCH_CHECK(!residual && !gelu, "slimkern cuda: the qkv output takes no residual and no GELU");
    TORCH_CHECK(n_out % (3 * qkv_heads) == 0 && seq_len > 0 && m % seq_len == 0,
                "slimkern cuda: qkv output needs n_out divisible by 3*heads and seq_len dividing M");
    check_tensor(out, "out", x, 5);
    TORCH_CHECK(out.size(0) == 3 && out.size(1) == m / seq_len && out.size(2) == qkv_heads &&
                    out.size(3) == seq_len && out.size(4) == n_out / (3 * qkv_heads),
                "slimkern cuda: qkv out has shape ", out.sizes());
    p.stride_yt = out.stride(0);
    p.stride_yb = out.stride(1);
    p.stride_yh = out.stride(2);
    p.stride_yn = out.stride(3);
  } else {
    check_tensor(out, "out", x, 2);
    TORCH_CHECK(out.size(0) == m && out.size(1) == n_out, "slimkern cuda: out must be [", m, ", ", n_out, "], got ",
                out.sizes());
    p.stride_ym = out.stride(0);
  }
  if (m == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  p.x = x.data_ptr();
  p.w = weight.data_ptr();
  p.bias = ptr_or_null(bias);
  p.w_value = ptr_or_null(value_weight);
  p.bias_value = ptr_or_null(value_bias);
  p.residual = ptr_or_null(residual);
  p.gamma = ptr_or_null(gamma);
  p.y = out.data_ptr();
  p.m = static_cast<int>(m);
  p.n = static_cast<int>(n_out);
  p.k = static_cast<int>(k_in);
  p.stride_xm = x.stride(0);
  p.stride_wn = weight.stride(0);
  p.stride_vn = value_weight ? value_weight->stride(0) : 0;
  p.stride_rm = residual ? residual->stride(0) : 0;
  p.gelu = gelu ? 1 : 0;
  p.qkv_heads = static_cast<int>(qkv_heads);
  p.seq_len = static_cast<int>(qkv_heads > 0 ? seq_len : 0);
  check_launch(cudaDeviceGetAttribute(&p.num_sms, cudaDevAttrMultiProcessorCount, x.device().index()),
               "sliced_linear");
  check_launch(slimkern::sliced_linear(p, dtype, c10::cuda::getCurrentCUDAStream()), "sliced_linear");
}

void attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Opt& bias, at::Tensor& out,
               double scale, bool bnjh) {
  const slimkern::DType dtype = kernel_dtype(q, "q");
  check_tensor(q, "q", q, 4);
  check_tensor(k, "k", q, 4);
  check_tensor(v, "v", q, 4);
  const int64_t batch = q.size(0), heads = q.size(1), n_q = q.size(2), d = q.size(3), n_k = k.size(2);
  TORCH_CHECK(k.size(0) == batch && k.size(1) == heads && k.size(3) == d && v.sizes() == k.sizes(),
              "slimkern cuda: k, v must be [B, H, Nk, d'] matching q ", q.sizes(), ", got k ", k.sizes(), ", v ",
              v.sizes());
  TORCH_CHECK(1 <= d && d <= slimkern::kMaxHeadDim, "slimkern cuda: head dim d'=", d, " outside [1, ",
              slimkern::kMaxHeadDim, "]");
  TORCH_CHECK(n_k >= 1, "slimkern cuda: attention needs at least one key");
  slimkern::AttentionParams p{};
  if (bias) {
    TORCH_CHECK(bias->is_cuda() && bias->device() == q.device(), "slimkern cuda: bias must be on ", q.device());
    TORCH_CHECK(bias->scalar_type() == at::kFloat || bias->scalar_type() == q.scalar_type(),
                "slimkern cuda: bias has dtype ", bias->scalar_type(), ", expected float32 or ", q.scalar_type());
    TORCH_CHECK(bias->dim() == 3 && bias->size(0) == heads && bias->size(1) == n_q && bias->size(2) == n_k,
                "slimkern cuda: bias must be [H, Nq, Nk] = [", heads, ", ", n_q, ", ", n_k, "], got ", bias->sizes());
    p.bias_is_fp32 = bias->scalar_type() == at::kFloat;
    p.sbh = bias->stride(0);
    p.sbq = bias->stride(1);
    p.sbk = bias->stride(2);
  }
  if (bnjh) {  // [B, Nq, d'*H], element (b, n, j, h) at column j*H + h
    check_tensor(out, "out", q, 3);
    TORCH_CHECK(out.size(0) == batch && out.size(1) == n_q && out.size(2) == d * heads,
                "slimkern cuda: out must be [B, Nq, d'*H], got ", out.sizes());
    p.sob = out.stride(0);
    p.soh = 1;
    p.son = out.stride(1);
    p.soj = heads;
  } else {
    check_tensor(out, "out", q, 4);
    TORCH_CHECK(out.sizes() == q.sizes(), "slimkern cuda: out must be [B, H, Nq, d'], got ", out.sizes());
    p.sob = out.stride(0);
    p.soh = out.stride(1);
    p.son = out.stride(2);
    p.soj = 1;
  }
  if (batch * heads * n_q == 0) return;
  const c10::cuda::CUDAGuard guard(q.device());
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.bias = ptr_or_null(bias);
  p.o = out.data_ptr();
  p.batch = static_cast<int>(batch);
  p.heads = static_cast<int>(heads);
  p.n_q = static_cast<int>(n_q);
  p.n_k = static_cast<int>(n_k);
  p.d = static_cast<int>(d);
  p.scale = static_cast<float>(scale);
  p.sqb = q.stride(0);
  p.sqh = q.stride(1);
  p.sqn = q.stride(2);
  p.skb = k.stride(0);
  p.skh = k.stride(1);
  p.skn = k.stride(2);
  p.svb = v.stride(0);
  p.svh = v.stride(1);
  p.svn = v.stride(2);
  check_launch(slimkern::attention(p, dtype, c10::cuda::getCurrentCUDAStream()), "attention");
}

void layer_norm(const at::Tensor& x, const Opt& weight, const Opt& bias, const Opt& residual, at::Tensor& out,
                const Opt& residual_out, double eps) {
  const slimkern::DType dtype = kernel_dtype(x, "x");
  check_tensor(x, "x", x, 2);
  const int64_t m = x.size(0), d = x.size(1);
  TORCH_CHECK(d <= slimkern::kMaxNormWidth, "slimkern cuda: d=", d, " exceeds ", slimkern::kMaxNormWidth);
  auto check_row = [&](const Opt& t, const char* name) {
    if (!t) return;
    check_tensor(*t, name, x, 1);
    TORCH_CHECK(t->size(0) == d, "slimkern cuda: ", name, " must be [", d, "], got ", t->sizes());
  };
  auto check_rows = [&](const at::Tensor& t, const char* name) {
    check_tensor(t, name, x, 2);
    TORCH_CHECK(t.size(0) == m && t.size(1) == d, "slimkern cuda: ", name, " must be [", m, ", ", d, "], got ",
                t.sizes());
  };
  check_row(weight, "weight");
  check_row(bias, "bias");
  check_rows(out, "out");
  TORCH_CHECK(residual.has_value() == residual_out.has_value(),
              "slimkern cuda: residual and residual_out go together");
  if (residual) {
    check_rows(*residual, "residual");
    check_rows(*residual_out, "residual_out");
  }
  if (m == 0 || d == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  slimkern::LayerNormParams p{};
  p.x = x.data_ptr();
  p.residual = ptr_or_null(residual);
  p.weight = ptr_or_null(weight);
  p.bias = ptr_or_null(bias);
  p.y = out.data_ptr();
  p.s = residual_out ? residual_out->data_ptr() : nullptr;
  p.m = static_cast<int>(m);
  p.d = static_cast<int>(d);
  p.eps = static_cast<float>(eps);
  p.stride_xm = x.stride(0);
  p.stride_rm = residual ? residual->stride(0) : 0;
  p.stride_ym = out.stride(0);
  p.stride_sm = residual_out ? residual_out->stride(0) : 0;
  check_launch(slimkern::layer_norm(p, dtype, c10::cuda::getCurrentCUDAStream()), "layer_norm");
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "slimkern CUDA kernels: width-sliced linear, attention at any head dim, LayerNorm";
  m.def("sliced_linear", &sliced_linear, "Y = epilogue(X[:, :k] @ W[:n, :k]^T) into out", py::arg("x"),
        py::arg("weight"), py::arg("bias"), py::arg("value_weight"), py::arg("value_bias"), py::arg("residual"),
        py::arg("gamma"), py::arg("out"), py::arg("n_out"), py::arg("k_in"), py::arg("gelu"), py::arg("qkv_heads"),
        py::arg("seq_len"));
  m.def("attention", &attention, "softmax(Q K^T * scale + bias) V into out", py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("bias"), py::arg("out"), py::arg("scale"), py::arg("bnjh"));
  m.def("layer_norm", &layer_norm, "LayerNorm (+ residual) into out", py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("residual"), py::arg("out"), py::arg("residual_out"), py::arg("eps"));
}
