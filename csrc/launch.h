// Host interface of the CUDA kernels: parameter structs and launchers, free of torch and of CUDA C++ syntax, so
// the pybind11 binding (binding.cpp) is compiled by the host compiler and the kernels (*.cu) by nvcc alone.
// Sizes are in elements, strides in elements; pointers are device pointers. Each launcher returns the launch's
// cudaError_t (cudaSuccess, or why it failed) and never synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace slimkern {

enum class DType : int { kBFloat16 = 0, kFloat16 = 1 };

// Y = epilogue(X[:, :K] @ W[:N, :K]^T): see sliced_linear.cu.
struct LinearParams {
  const void* x;            // [M, >=K], row stride stride_xm
  const void* w;            // full weight [>=N, >=K], row stride stride_wn; only W[:N, :K] is read
  const void* bias;         // [>=N] or nullptr
  const void* w_value;      // gated FFN: value weight (fc3) like w, row stride stride_vn; nullptr otherwise
  const void* bias_value;   // gated FFN: value bias [>=N] or nullptr
  const void* residual;     // [M, N] (row stride stride_rm) or nullptr
  const void* gamma;        // LayerScale [N] or nullptr (only with residual)
  void* y;                  // [M, N] (row stride stride_ym), or [3, B, H, seq_len, N/(3H)] with qkv_heads > 0
  int m, n, k;
  int64_t stride_xm, stride_wn, stride_vn, stride_rm, stride_ym;
  int gelu;                 // 1: exact (erf) GELU after the bias
  int qkv_heads, seq_len;   // > 0: scatter column j*3H + t*H + h of row b*seq_len + i to y[t, b, h, i, j]
  int64_t stride_yt, stride_yb, stride_yh, stride_yn;
  int num_sms;              // streaming multiprocessors of the device (tile-size heuristic)
};

cudaError_t sliced_linear(const LinearParams& p, DType dtype, cudaStream_t stream);

// O = softmax(Q K^T * scale + bias) V per (batch, head): see attention.cu.
struct AttentionParams {
  const void* q;            // [B, H, Nq, d], strides (b, h, n) below, unit stride along d
  const void* k;            // [B, H, Nk, d]
  const void* v;            // [B, H, Nk, d]
  const void* bias;         // [H, Nq, Nk] (strides below), fp32 or the dtype of q; nullptr for none
  void* o;                  // element (b, h, n, j) at b*sob + h*soh + n*son + j*soj
  int batch, heads, n_q, n_k, d;
  float scale;
  int bias_is_fp32;
  int64_t sqb, sqh, sqn, skb, skh, skn, svb, svh, svn;
  int64_t sbh, sbq, sbk;
  int64_t sob, soh, son, soj;
};

cudaError_t attention(const AttentionParams& p, DType dtype, cudaStream_t stream);

// s = x (+ residual); y = (s - mean) / sqrt(var + eps) * weight + bias per row: see layer_norm.cu.
struct LayerNormParams {
  const void* x;            // [M, D], row stride stride_xm
  const void* residual;     // [M, D] or nullptr
  const void* weight;       // [D] or nullptr
  const void* bias;         // [D] or nullptr
  void* y;                  // [M, D]
  void* s;                  // [M, D]: x + residual (only with residual)
  int m, d;
  float eps;
  int64_t stride_xm, stride_rm, stride_ym, stride_sm;
};

cudaError_t layer_norm(const LayerNormParams& p, DType dtype, cudaStream_t stream);

// Largest supported attention head dim and LayerNorm row width (the Python wrapper checks the same limits).
constexpr int kMaxHeadDim = 256;
constexpr int kMaxNormWidth = 8192;

}  // namespace slimkern
