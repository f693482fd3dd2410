// Width-sliced linear layer on the tensor cores: Y = epilogue(X[:, :K] @ W[:N, :K]^T), reading the prefix
// W[:N, :K] of the full stored weight in place through its full row stride (the weight is never copied).
//
// X [M, K] and W [N, K] are both K-contiguous, the "row.col" operand order of mma.sync.m16n8k16: W tiles are
// B-fragments as stored. Per K step of 32 the block copies an X tile [BM][32] and a W tile [BN][32] to shared
// memory (rows padded to 40 elements = 80 bytes, so the 8 row addresses of one ldmatrix hit 8 distinct bank
// quads) through a 3-stage cp.async pipeline; each warp then multiplies its WM x WN sub-tile with fp32
// accumulators in registers. Epilogue in fp32 on the accumulators, one rounding on store:
//   bias -> GELU (exact erf) | gated SiLU (silu(X W^T + b) * (X V^T + bv), V = value weight) -> residual + gamma*y
//   -> store to [M, N] rows or scattered to the attention kernel's [3, B, H, N, d'] (qkv).
#include "common.cuh"
#include "launch.h"

namespace slimkern {

constexpr int kBK = 32;           // K elements per pipeline stage (two mma k-steps)
constexpr int kLds = kBK + 8;     // padded shared-memory row (elements)
constexpr int kStages = 3;

template <int BM, int BN, int WARPS_M, int WARPS_N, bool GATED>
struct Tile {
  static constexpr int kThreads = WARPS_M * WARPS_N * 32;
  static constexpr int kWM = BM / WARPS_M;  // rows per warp
  static constexpr int kWN = BN / WARPS_N;  // columns per warp
  static constexpr int kMT = kWM / 16;      // m16 tiles per warp
  static constexpr int kNT = kWN / 8;       // n8 tiles per warp
  static constexpr int kStageElems = (BM + (GATED ? 2 : 1) * BN) * kLds;
  static constexpr int kSmemBytes = kStages * kStageElems * 2;
  static_assert(kWM % 16 == 0 && kWN % 16 == 0, "warp tiles are whole m16 x n16 blocks");
};

__device__ __forceinline__ float gelu_erf(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }
__device__ __forceinline__ float silu(float v) { return v / (1.0f + __expf(-v)); }

template <typename T, int BM, int BN, int WARPS_M, int WARPS_N, bool GATED>
__global__ void __launch_bounds__(WARPS_M* WARPS_N * 32)
    sliced_linear_kernel(const LinearParams p, const bool aligned) {
  using Cfg = Tile<BM, BN, WARPS_M, WARPS_N, GATED>;
  constexpr int kThreads = Cfg::kThreads, kMT = Cfg::kMT, kNT = Cfg::kNT;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);

  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w = static_cast<const T*>(p.w);
  const T* __restrict__ wv = static_cast<const T*>(p.w_value);
  const int n0 = blockIdx.x * BN;
  const int m0 = blockIdx.y * BM;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int wm = (warp / WARPS_N) * Cfg::kWM;
  const int wn = (warp % WARPS_N) * Cfg::kWN;

  // stage layout: X tile [BM][kLds], W tile [BN][kLds] (and the value weight's tile [BN][kLds])
  auto load = [&](int stage, int kt) {
    T* s = smem + stage * Cfg::kStageElems;
    const int k0 = kt * kBK;
    load_tile<T, BM, kBK, kLds, kThreads>(s, x, p.stride_xm, m0, p.m, k0, p.k, aligned);
    load_tile<T, BN, kBK, kLds, kThreads>(s + BM * kLds, w, p.stride_wn, n0, p.n, k0, p.k, aligned);
    if constexpr (GATED)
      load_tile<T, BN, kBK, kLds, kThreads>(s + (BM + BN) * kLds, wv, p.stride_vn, n0, p.n, k0, p.k, aligned);
  };

  float acc[kMT][kNT][4] = {};
  float acc_v[GATED ? kMT : 1][GATED ? kNT : 1][4] = {};

  const int k_tiles = (p.k + kBK - 1) / kBK;
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load(s, s);
    cp_async_commit();  // one group per stage, empty or not, keeps the wait counts uniform
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();  // tile kt has landed (this thread's copies) ...
    __syncthreads();               // ... for every thread, and the stage about to be refilled is no longer read
    const int next = kt + kStages - 1;
    if (next < k_tiles) load(next % kStages, next);
    cp_async_commit();

    const T* xs = smem + (kt % kStages) * Cfg::kStageElems;
    const T* ws = xs + BM * kLds;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)  // A-fragment: lanes 0-15 rows 0-15 at column 0, lanes 16-31 at column 8
        ldmatrix_x4(a[mt], xs + (wm + mt * 16 + lane % 16) * kLds + kk + (lane / 16) * 8);
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        // two n8 B-fragments: matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
        const int row = wn + np * 16 + lane % 8 + (lane / 16) * 8;
        const int col = kk + ((lane / 8) % 2) * 8;
        uint32_t b[4];
        ldmatrix_x4(b, ws + row * kLds + col);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<T>(acc[mt][2 * np], a[mt], b[0], b[1]);
          mma_16816<T>(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
        }
        if constexpr (GATED) {
          ldmatrix_x4(b, ws + BN * kLds + row * kLds + col);
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma_16816<T>(acc_v[mt][2 * np], a[mt], b[0], b[1]);
            mma_16816<T>(acc_v[mt][2 * np + 1], a[mt], b[2], b[3]);
          }
        }
      }
    }
  }
  cp_async_wait<0>();

  // Epilogue: accumulator element (mt, nt, i) is row wm + mt*16 + g + 8*(i/2), column wn + nt*8 + 2t + i%2.
  const T* __restrict__ bias = static_cast<const T*>(p.bias);
  const T* __restrict__ bias_v = static_cast<const T*>(p.bias_value);
  const T* __restrict__ res = static_cast<const T*>(p.residual);
  const T* __restrict__ gamma = static_cast<const T*>(p.gamma);
  T* __restrict__ y = static_cast<T*>(p.y);
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int row = m0 + wm + mt * 16 + g + 8 * (i / 2);
      if (row >= p.m) continue;
      int64_t row_off;
      if (p.qkv_heads > 0)
        row_off = static_cast<int64_t>(row / p.seq_len) * p.stride_yb + static_cast<int64_t>(row % p.seq_len) * p.stride_yn;
      else
        row_off = static_cast<int64_t>(row) * p.stride_ym;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const int col = n0 + wn + nt * 8 + 2 * t + i % 2;
        if (col >= p.n) continue;
        float v = acc[mt][nt][i];
        if (bias) v += to_float(bias[col]);
        if constexpr (GATED) {
          float value = acc_v[mt][nt][i];
          if (bias_v) value += to_float(bias_v[col]);
          v = silu(v) * value;
        } else {
          if (p.gelu) v = gelu_erf(v);
        }
        if (res) {
          if (gamma) v *= to_float(gamma[col]);
          v += to_float(res[static_cast<int64_t>(row) * p.stride_rm + col]);
        }
        int64_t off;
        if (p.qkv_heads > 0) {  // column j*3H + tt*H + h -> [tt, b, h, n, j]
          const int heads3 = 3 * p.qkv_heads;
          const int j = col / heads3, tt = (col / p.qkv_heads) % 3, h = col % p.qkv_heads;
          off = row_off + tt * p.stride_yt + h * p.stride_yh + j;
        } else {
          off = row_off + col;
        }
        y[off] = from_float<T>(v);
      }
    }
  }
}

namespace {

template <typename T, int BM, int BN, int WARPS_M, int WARPS_N, bool GATED>
cudaError_t launch(const LinearParams& p, bool aligned, cudaStream_t stream) {
  using Cfg = Tile<BM, BN, WARPS_M, WARPS_N, GATED>;
  const dim3 grid((p.n + BN - 1) / BN, (p.m + BM - 1) / BM);
  sliced_linear_kernel<T, BM, BN, WARPS_M, WARPS_N, GATED><<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p, aligned);
  return cudaGetLastError();
}

template <typename T, int BM, int BN, int WARPS_M, int WARPS_N, bool GATED>
cudaError_t opt_in() {
  return cudaFuncSetAttribute(sliced_linear_kernel<T, BM, BN, WARPS_M, WARPS_N, GATED>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                              Tile<BM, BN, WARPS_M, WARPS_N, GATED>::kSmemBytes);
}

// every tile configuration that dispatch() launches
template <typename T>
cudaError_t opt_in_all() {
  cudaError_t err = opt_in<T, 128, 128, 2, 4, false>();
  if (err == cudaSuccess) err = opt_in<T, 64, 64, 2, 2, false>();
  if (err == cudaSuccess) err = opt_in<T, 64, 64, 2, 2, true>();
  return err;
}

bool is_aligned(const void* ptr, int64_t stride) {
  return ptr == nullptr || (reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && stride % 8 == 0);
}

template <typename T>
cudaError_t dispatch(const LinearParams& p, cudaStream_t stream) {
  const bool aligned = is_aligned(p.x, p.stride_xm) && is_aligned(p.w, p.stride_wn) &&
                       is_aligned(p.w_value, p.stride_vn);
  if (p.w_value != nullptr) return launch<T, 64, 64, 2, 2, true>(p, aligned, stream);
  // 128 x 128 tiles (8 warps of 64 x 32) when they alone fill every SM once; else 64 x 64 (4 warps of 32 x 32)
  const int64_t big_tiles = static_cast<int64_t>((p.m + 127) / 128) * ((p.n + 127) / 128);
  if (big_tiles >= p.num_sms) return launch<T, 128, 128, 2, 4, false>(p, aligned, stream);
  return launch<T, 64, 64, 2, 2, false>(p, aligned, stream);
}

}  // namespace

cudaError_t sliced_linear(const LinearParams& p, DType dtype, cudaStream_t stream) {
  if (p.m <= 0 || p.n <= 0 || p.k <= 0) return cudaErrorInvalidValue;
  static std::atomic<uint64_t> opted_in{0};
  const cudaError_t err = once_per_device(opted_in, [] {
    const cudaError_t e = opt_in_all<__nv_bfloat16>();
    return e == cudaSuccess ? opt_in_all<__half>() : e;
  });
  if (err != cudaSuccess) return err;
  return dtype == DType::kBFloat16 ? dispatch<__nv_bfloat16>(p, stream) : dispatch<__half>(p, stream);
}

}  // namespace slimkern
