// Fused attention at any slimmed head dim d' (1..256) on the tensor cores, flash-attention-2 style:
// O = softmax(Q K^T * scale + bias) V per (batch, head), with an fp32 online softmax (running row max and sum;
// the output is rescaled when the max grows) so the [Nq, Nk] score matrix never leaves registers.
//
// The head dim is padded to D = 16, 32, 64, 128 or 256 INSIDE the kernel: tiles are loaded with columns >= d'
// zero-filled (and never read), so zeros add nothing to Q K^T and the padded output columns are not stored.
// A block owns 64 queries of one (batch, head), 4 warps of 16 query rows each; it walks the keys in tiles of BN.
// Per key tile: S = Q K^T (A = Q rows, B = K rows as stored), scale + bias in log2 units, mask keys >= Nk,
// online softmax, then O += P V with P re-packed from the S accumulators into A-fragments (the C layout of two
// adjacent n8 tiles is the A layout of one k16 step) and V read through ldmatrix.trans.
#include "common.cuh"
#include "launch.h"

namespace slimkern {

constexpr int kAttnBM = 64;  // queries per block
constexpr int kAttnWarps = 4;
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
struct AttnTile {
  static constexpr int kBN = D <= 128 ? 64 : 32;  // keys per tile: 256-wide rows halve it to stay in registers
  static constexpr int kLds = D + 8;              // padded shared-memory row: conflict-free ldmatrix
  static constexpr int kSmemBytes = (kAttnBM + 2 * kBN) * kLds * 2;
};

template <typename T, int D>
__global__ void __launch_bounds__(kAttnWarps * 32) attention_kernel(const AttentionParams p, const bool aligned) {
  using Cfg = AttnTile<D>;
  constexpr int kBN = Cfg::kBN, kLds = Cfg::kLds, kThreads = kAttnWarps * 32;
  constexpr int kDT = D / 8;    // n8 tiles of the output row
  constexpr int kST = kBN / 8;  // n8 tiles of the score row
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* qs = reinterpret_cast<T*>(smem_raw);  // [64][kLds]
  T* ks = qs + kAttnBM * kLds;             // [kBN][kLds]
  T* vs = ks + kBN * kLds;                 // [kBN][kLds]

  const int bh = blockIdx.y;
  const int b = bh / p.heads, h = bh % p.heads;
  const int q0 = blockIdx.x * kAttnBM;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;

  const T* q = static_cast<const T*>(p.q) + b * p.sqb + h * p.sqh;
  const T* k = static_cast<const T*>(p.k) + b * p.skb + h * p.skh;
  const T* v = static_cast<const T*>(p.v) + b * p.svb + h * p.svh;
  load_tile<T, kAttnBM, D, kLds, kThreads>(qs, q, p.sqn, q0, p.n_q, 0, p.d, aligned);
  cp_async_commit();

  float o[kDT][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY};  // rows g and g + 8 of this warp's 16
  float row_sum[2] = {0.f, 0.f};              // this thread's share; the quad's shares are added at the end
  const float scale = p.scale * kLog2e;       // exp(x) = exp2(x * log2 e)
  const int qrow[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};

  for (int n0 = 0; n0 < p.n_k; n0 += kBN) {
    __syncthreads();  // every warp is done with the previous K, V tiles
    // K and V in separate cp.async groups: V keeps loading while S = Q K^T and the softmax run
    load_tile<T, kBN, D, kLds, kThreads>(ks, k, p.skn, n0, p.n_k, 0, p.d, aligned);
    cp_async_commit();
    load_tile<T, kBN, D, kLds, kThreads>(vs, v, p.svn, n0, p.n_k, 0, p.d, aligned);
    cp_async_commit();
    cp_async_wait<1>();  // Q and K have landed
    __syncthreads();

    float s[kST][4] = {};
#pragma unroll
    for (int kk = 0; kk < D; kk += 16) {
      uint32_t a[4];
      ldmatrix_x4(a, qs + (warp * 16 + lane % 16) * kLds + kk + (lane / 16) * 8);
#pragma unroll
      for (int np = 0; np < kST / 2; ++np) {
        uint32_t bf[4];
        ldmatrix_x4(bf, ks + (np * 16 + lane % 8 + (lane / 16) * 8) * kLds + kk + ((lane / 8) % 2) * 8);
        mma_16816<T>(s[2 * np], a, bf[0], bf[1]);
        mma_16816<T>(s[2 * np + 1], a, bf[2], bf[3]);
      }
    }

    // logits in log2 units; element (nt, i) is query qrow[i / 2], key n0 + nt*8 + 2t + i%2
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kST; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int key = n0 + nt * 8 + 2 * t + i % 2;
        const int r = qrow[i / 2];
        float x = s[nt][i] * scale;
        if (key >= p.n_k) {
          x = -INFINITY;
        } else if (p.bias != nullptr && r < p.n_q) {
          const int64_t off = h * p.sbh + r * p.sbq + key * p.sbk;
          const float bias = p.bias_is_fp32 ? static_cast<const float*>(p.bias)[off]
                                            : to_float(static_cast<const T*>(p.bias)[off]);
          x += bias * kLog2e;
        }
        s[nt][i] = x;
        tile_max[i / 2] = fmaxf(tile_max[i / 2], x);
      }
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // the 4 lanes of a quad hold one row: reduce the max across them
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      // every key tile holds at least one valid key, so the new max is finite and alpha = 0 on the first tile
      const float new_max = fmaxf(row_max[r], tile_max[r]);
      alpha[r] = exp2f(row_max[r] - new_max);
      row_max[r] = new_max;
      row_sum[r] *= alpha[r];
    }
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      o[dt][0] *= alpha[0];
      o[dt][1] *= alpha[0];
      o[dt][2] *= alpha[1];
      o[dt][3] *= alpha[1];
    }
#pragma unroll
    for (int nt = 0; nt < kST; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        s[nt][i] = exp2f(s[nt][i] - row_max[i / 2]);
        row_sum[i / 2] += s[nt][i];
      }
    }

    cp_async_wait<0>();  // V has landed
    __syncthreads();
    // O += P V: k16 step kk uses score tiles 2kk (keys 0-7) and 2kk+1 (keys 8-15) as one A-fragment
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      const uint32_t a[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                             pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < kDT / 2; ++dp) {
        // transposed matrices (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15)
        uint32_t bf[4];
        ldmatrix_x4_trans(bf, vs + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kLds + dp * 16 + (lane / 16) * 8);
        mma_16816<T>(o[2 * dp], a, bf[0], bf[1]);
        mma_16816<T>(o[2 * dp + 1], a, bf[2], bf[3]);
      }
    }
  }

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
    inv[r] = 1.0f / row_sum[r];
  }
  T* out = static_cast<T*>(p.o) + b * p.sob + h * p.soh;
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = qrow[i / 2];
      const int j = dt * 8 + 2 * t + i % 2;
      if (r < p.n_q && j < p.d) out[r * p.son + j * p.soj] = from_float<T>(o[dt][i] * inv[i / 2]);
    }
  }
}

namespace {

template <typename T, int D>
cudaError_t attention_launch(const AttentionParams& p, bool aligned, cudaStream_t stream) {
  const dim3 grid((p.n_q + kAttnBM - 1) / kAttnBM, p.batch * p.heads);
  attention_kernel<T, D><<<grid, kAttnWarps * 32, AttnTile<D>::kSmemBytes, stream>>>(p, aligned);
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t opt_in() {
  return cudaFuncSetAttribute(attention_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              AttnTile<D>::kSmemBytes);
}

// every head-dim bucket that attention_dispatch() launches
template <typename T>
cudaError_t opt_in_all() {
  cudaError_t err = opt_in<T, 16>();
  if (err == cudaSuccess) err = opt_in<T, 32>();
  if (err == cudaSuccess) err = opt_in<T, 64>();
  if (err == cudaSuccess) err = opt_in<T, 128>();
  if (err == cudaSuccess) err = opt_in<T, 256>();
  return err;
}

template <typename T>
cudaError_t attention_dispatch(const AttentionParams& p, cudaStream_t stream) {
  auto ok = [](const void* ptr, int64_t stride) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && stride % 8 == 0;
  };
  // the head offsets b*sqb + h*sqh must keep rows 16-byte aligned too
  const bool aligned = ok(p.q, p.sqn) && ok(p.k, p.skn) && ok(p.v, p.svn) && p.sqb % 8 == 0 && p.sqh % 8 == 0 &&
                       p.skb % 8 == 0 && p.skh % 8 == 0 && p.svb % 8 == 0 && p.svh % 8 == 0;
  if (p.d <= 16) return attention_launch<T, 16>(p, aligned, stream);
  if (p.d <= 32) return attention_launch<T, 32>(p, aligned, stream);
  if (p.d <= 64) return attention_launch<T, 64>(p, aligned, stream);
  if (p.d <= 128) return attention_launch<T, 128>(p, aligned, stream);
  return attention_launch<T, 256>(p, aligned, stream);
}

}  // namespace

cudaError_t attention(const AttentionParams& p, DType dtype, cudaStream_t stream) {
  if (p.batch <= 0 || p.heads <= 0 || p.n_q <= 0 || p.n_k <= 0 || p.d <= 0 || p.d > kMaxHeadDim)
    return cudaErrorInvalidValue;
  static std::atomic<uint64_t> opted_in{0};
  const cudaError_t err = once_per_device(opted_in, [] {
    const cudaError_t e = opt_in_all<__nv_bfloat16>();
    return e == cudaSuccess ? opt_in_all<__half>() : e;
  });
  if (err != cudaSuccess) return err;
  return dtype == DType::kBFloat16 ? attention_dispatch<__nv_bfloat16>(p, stream)
                                   : attention_dispatch<__half>(p, stream);
}

}  // namespace slimkern
