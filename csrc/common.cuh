// Device helpers shared by the tensor-core kernels: 16-bit type conversions, cp.async, ldmatrix, mma.sync.
//
// Plain CUDA (no torch headers), so every kernel file compiles standalone with nvcc in about a second.
// Fragment layouts are those of the PTX ISA for mma.m16n8k16 with .bf16/.f16 operands and .f32 accumulators
// (lane = 32*warp + l, g = l / 4 "group", t = l % 4 "thread in group"):
//   A 16x16 (row-major): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B 16x8  (col-major): b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C 16x8  (fp32):      c0, c1 = C[g][2t], C[g][2t+1];  c2, c3 = C[g+8][2t], C[g+8][2t+1]
// ldmatrix.m8n8 hands lane l the pair (row l/4, cols 2(l%4), 2(l%4)+1) of each 8x8 matrix, which is exactly an
// A-fragment or (for a matrix stored n-major, k contiguous) a B-fragment register; .trans hands out the transpose.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

namespace slimkern {

// Run fn (returning cudaError_t) once per device. Used to opt kernels in to more than 48 KB of dynamic shared
// memory, an attribute of the device's context: every kernel of a file is opted in at the file's first launch on a
// device, so a later first use of another instantiation never calls cudaFuncSetAttribute during a graph capture.
template <typename Fn>
cudaError_t once_per_device(std::atomic<uint64_t>& done, Fn fn) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const uint64_t bit = uint64_t{1} << (device % 64);
  if (done.load(std::memory_order_acquire) & bit) return cudaSuccess;
  err = fn();
  if (err == cudaSuccess) done.fetch_or(bit, std::memory_order_release);
  return err;
}

__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(float v) { return v; }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// Two floats -> one 32-bit mma operand register (first value in the low half).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that reads only src_bytes (0..16) and zero-fills the rest: out-of-range rows and
// the columns past a slimmed width are never read, and arrive as zeros. src must be 16-byte aligned.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}

// d += A(16x16) * B(16x8), fp32 accumulation on the tensor cores (HMMA on sm_80 and sm_90).
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Copy a ROWS x COLS tile of 16-bit elements (rows row0.., columns col0..) of a row-major matrix with row stride
// ld into shared memory laid out [ROWS][LDS]. Rows >= rows_valid and columns >= cols_valid are zero-filled and
// never read, which is what lets a kernel read a prefix W[:n, :k] of a full weight in place. aligned: the base
// pointer is 16-byte aligned and ld a multiple of 8, so each 8-element chunk moves with one cp.async; otherwise
// elements are loaded one by one (a strided view or an odd slimmed head dim) and stored as one 16-byte chunk.
template <typename T, int ROWS, int COLS, int LDS, int THREADS>
__device__ __forceinline__ void load_tile(T* dst, const T* __restrict__ src, int64_t ld, int row0, int rows_valid,
                                          int col0, int cols_valid, bool aligned) {
  static_assert(COLS % 8 == 0 && LDS % 8 == 0, "tiles move in 16-byte chunks");
  constexpr int kChunksPerRow = COLS / 8;
  constexpr int kChunks = ROWS * kChunksPerRow;
  for (int c = threadIdx.x; c < kChunks; c += THREADS) {
    const int r = c / kChunksPerRow;
    const int col = (c % kChunksPerRow) * 8;
    const int grow = row0 + r;
    const int gcol = col0 + col;
    const int left = cols_valid - gcol;
    const int n = grow < rows_valid ? (left < 0 ? 0 : (left > 8 ? 8 : left)) : 0;
    T* d = dst + r * LDS + col;
    const T* s = src + (n > 0 ? static_cast<int64_t>(grow) * ld + gcol : 0);
    if (aligned) {
      cp_async_16(d, s, 2 * n);
    } else {
      union {
        uint4 vec;
        uint16_t bits[8];
      } chunk;
      chunk.vec = make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int i = 0; i < 8; ++i)  // constant indices keep the chunk in registers (no local memory)
        if (i < n) chunk.bits[i] = reinterpret_cast<const uint16_t*>(s)[i];
      *reinterpret_cast<uint4*>(d) = chunk.vec;
    }
  }
}

}  // namespace slimkern
