"""The emulator header: CUDA C kernel source compiled for the host with ``g++ -include``.

Written to the cache folder next to each emulator build (``emulator.py``); kept as a Python
string so it ships inside the package. Model: the blocks of a grid run one after another on one
OS thread; every CUDA thread of a block is a fiber with its own stack that runs until the next
``__syncthreads``/``__syncwarp``/shuffle/vote, so each interleaving is a legal CUDA schedule.
Thread and block orders are selectable (forward, reverse, seeded shuffle): results that differ
between orders expose races. ``__shared__`` memory is refilled with 0xFF bytes (NaN) before
every block, so reads of shared memory nobody wrote show up as NaN. Divergent barriers,
shuffles naming exited lanes and deadlocks are reported as launch errors. Under
AddressSanitizer (``-fsanitize=address``) fibers use ucontext, which ASan understands.
"""

CUEMU_H = r"""// cuemu.h -- run CUDA C kernel source UNCHANGED on the CPU (irgraph's emulator; see backends/cuda/emulator.py).
//
//   g++ -std=c++17 -O2 -fPIC -shared -Wno-unknown-pragmas -include cuemu.h kernels.cu wrapper.cpp
//
// Model: one OS thread; the blocks of a grid run one after another; inside a block every CUDA
// thread is a fiber (own stack).  A fiber runs until it reaches a synchronisation point
// (__syncthreads, __syncwarp, a warp shuffle/vote) or exits, then the next fiber runs.  So the
// interleaving is a *legal* CUDA schedule, and the order in which fibers (and blocks) are run is
// selectable (forward / reverse / seeded random): a kernel whose results differ between orders has a
// data race (missing __syncthreads, implicit warp-synchronous code, two blocks writing one output).
//
// Errors detected and reported (launch returns non-zero, cuemu_last_error() says why):
//   * __syncthreads() not reached by every thread of the block (divergent barrier -> UB on a GPU),
//   * deadlock: warp collective whose mask names a lane that exited / uses another mask,
//   * a lane calling a *_sync intrinsic with a mask that does not contain itself.
// Out-of-bounds global/shared accesses: build with -fsanitize=address (then ucontext is used for the
// fibers, which ASan understands) and allocate device buffers with cuemu_alloc (malloc => redzones).
//
// Uninitialised __shared__ reads: shared memory is refilled with 0xFF bytes (float NaN, int -1) before
// each block (non-ASan builds), so they surface as NaN/garbage in the compared outputs.
// NOT modelled: memory-model subtleties (everything is sequentially consistent), dynamic `extern __shared__`
// (use the IRG_DYN_SMEM macro below), textures, cooperative groups, tensor-core intrinsics.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>
#if !defined(__x86_64__) || defined(__SANITIZE_ADDRESS__) || defined(CUEMU_FORCE_UCONTEXT)
#define CUEMU_UCONTEXT 1
#include <ucontext.h>
#endif

// CUDA's own host-usable headers first (before our keyword macros): uint3/dim3 from vector_types.h,
// __half / __nv_bfloat16 with host-side arithmetic.  A kernel's later #include of them is a no-op.
#if __has_include(<vector_types.h>) && !defined(CUEMU_NO_CUDA_HEADERS)
#include <vector_types.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define CUEMU_HAVE_CUDA_HEADERS 1
#endif

// ---- CUDA keywords -------------------------------------------------------------------------
#undef __global__
#define __global__ __attribute__((noinline))
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __forceinline__
#define __forceinline__ inline
#undef __noinline__
#define __noinline__ __attribute__((noinline))
#undef __launch_bounds__
#define __launch_bounds__(...)
// One block at a time on one OS thread => a static is "per block".  Outside ASan builds all
// __shared__ variables go to one ELF section that launch() fills with 0xFF bytes (NaN / -1) before
// every block, so reading shared memory nobody wrote in this block shows up as NaN in the results.
// (ASan skips globals in named sections, so ASan builds keep plain statics with redzones instead.)
#undef __shared__
#if defined(__SANITIZE_ADDRESS__)
#define __shared__ static
#else
#define __shared__ static __attribute__((section("cuemu_smem"), used))
extern "C" char __start_cuemu_smem[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_cuemu_smem[] __attribute__((weak, visibility("hidden")));
#endif
#undef __constant__
#define __constant__ static
#undef __align__
#define __align__(n) alignas(n)
// Dynamic shared memory: have the generator emit IRG_DYN_SMEM(float, buf); instead of
// `extern __shared__ float buf[];` (on the GPU the same macro expands to the extern declaration).
#define IRG_DYN_SMEM(T, name) T* name = reinterpret_cast<T*>(::cuemu::st.dyn_smem.data())

#ifndef CUEMU_HAVE_CUDA_HEADERS
struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
#endif

namespace cuemu {
enum Order { FORWARD = 0, REVERSE = 1, RANDOM = 2 };
enum FState { READY = 0, DONE = 1 };

struct Fiber {
  uint3 tid{0, 0, 0};
  unsigned lane = 0, warp = 0, linear = 0;
  int state = READY;
  unsigned bar_gen = 0;  // barrier generation this fiber last arrived at
#ifdef CUEMU_UCONTEXT
  ucontext_t ctx;
#else
  void* sp = nullptr;
#endif
  char* stack = nullptr;
};

// A pending warp rendezvous (shuffle/vote/syncwarp) among the lanes of `mask`.
struct Rdv { bool used = false; unsigned mask = 0, arrived = 0, departed = 0; uint64_t val[32]; };
struct Warp { Rdv r[8]; };

struct State {
  dim3 grid, block;
  uint3 bidx{0, 0, 0};
  std::vector<Fiber> f;
  std::vector<Warp> warps;
  unsigned nthreads = 0, bar_gen = 0, bar_count = 0, ndone = 0;
  bool progress = false;
  std::string error;
  std::vector<uint64_t> dyn_smem;
  size_t stack_size = 128 * 1024;
  Fiber* cur = nullptr;
  const std::function<void()>* body = nullptr;
#ifdef CUEMU_UCONTEXT
  ucontext_t sched;
#else
  void* sched_sp = nullptr;
#endif
};
inline State st;

#ifndef CUEMU_UCONTEXT
// Minimal x86-64 context switch (callee-saved regs + MXCSR/x87 CW): ~50x cheaper than swapcontext,
// which makes a sigprocmask syscall on every switch.
extern "C" void cuemu_switch(void** save_sp, void* new_sp);
asm(R"(
.text
.p2align 4
.weak cuemu_switch
.hidden cuemu_switch
.type cuemu_switch,@function
cuemu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size cuemu_switch,.-cuemu_switch
)");
#endif

inline void yield() {  // fiber -> scheduler
#ifdef CUEMU_UCONTEXT
  swapcontext(&st.cur->ctx, &st.sched);
#else
  cuemu_switch(&st.cur->sp, st.sched_sp);
#endif
}
[[noreturn]] inline void fail(const std::string& msg) {  // record error, never run this fiber again
  if (st.error.empty()) {
    char b[160];
    snprintf(b, sizeof b, " [block (%u,%u,%u) thread (%u,%u,%u)]", st.bidx.x, st.bidx.y, st.bidx.z,
             st.cur->tid.x, st.cur->tid.y, st.cur->tid.z);
    st.error = msg + b;
  }
  for (;;) yield();
}

inline void fiber_main() {
  (*st.body)();
  Fiber* me = st.cur;
  me->state = DONE;
  st.ndone++;
  st.progress = true;
  if (st.bar_count > 0) fail("thread exited while others wait in __syncthreads() (divergent barrier)");
  for (;;) yield();
}

// __syncthreads(): strict -- every thread of the block must arrive; an exited thread is an error.
inline void syncthreads() {
  if (st.ndone > 0) fail("__syncthreads() after some threads of the block exited (divergent barrier)");
  Fiber* me = st.cur;
  me->bar_gen = st.bar_gen;
  st.progress = true;
  if (++st.bar_count == st.nthreads) { st.bar_count = 0; st.bar_gen++; return; }
  while (st.bar_gen == me->bar_gen) yield();
}

// Warp rendezvous: every lane of `mask` deposits v, waits for the others, then read(vals) runs.
// a, b: this lane's own parameters for read() (shuffle delta/width); lanes may differ, as in CUDA.
template <class R>
inline R warp_rdv(unsigned mask, uint64_t v, R (*read)(const uint64_t*, unsigned, unsigned, uint64_t, int, int),
                  int a = 0, int b = 0) {
  Fiber* me = st.cur;
  unsigned bit = 1u << me->lane;
  if (!(mask & bit)) fail("warp intrinsic called by a lane that is not in its mask");
  Warp& w = st.warps[me->warp];
  Rdv* r = nullptr;
  for (auto& c : w.r) if (c.used && c.mask == mask && !(c.arrived & bit)) { r = &c; break; }
  if (!r) for (auto& c : w.r) if (!c.used) { r = &c; c.used = true; c.mask = mask; c.arrived = c.departed = 0; break; }
  if (!r) fail("too many concurrent warp rendezvous (mask mismatch?)");
  r->val[me->lane] = v;
  r->arrived |= bit;
  st.progress = true;
  while (r->arrived != mask) {
    unsigned base = me->warp * 32;
    for (unsigned l = 0; l < 32; ++l)
      if ((mask >> l & 1) && base + l < st.nthreads && st.f[base + l].state == DONE)
        fail("warp intrinsic mask names a lane that has exited");
    yield();
  }
  R out = read(r->val, me->lane, mask, v, a, b);
  r->departed |= bit;
  if (r->departed == mask) r->used = false;
  return out;
}

template <class T> inline uint64_t pack(T v) { uint64_t u = 0; std::memcpy(&u, &v, sizeof(T)); return u; }
template <class T> inline T unpack(uint64_t u) { T v; std::memcpy(&v, &u, sizeof(T)); return v; }

// Run `body` for every thread of the grid.  Returns 0 or -1 (see st.error).
inline int launch(dim3 grid, dim3 block, size_t dyn_smem, int order, unsigned seed,
                  const std::function<void()>& body) {
  st.error.clear();
  st.grid = grid; st.block = block; st.body = &body;
  st.nthreads = block.x * block.y * block.z;
  if (st.nthreads == 0 || st.nthreads > 1024) { st.error = "bad block size"; return -1; }
  st.dyn_smem.assign((dyn_smem + 7) / 8, ~0ull);  // refilled with 0xFF (NaN) per block
  if (const char* s = getenv("CUEMU_STACK")) st.stack_size = strtoul(s, nullptr, 0);
  if (st.f.size() != st.nthreads) {
    for (auto& f : st.f) free(f.stack);
    st.f.assign(st.nthreads, Fiber{});
    for (auto& f : st.f) f.stack = (char*)aligned_alloc(64, st.stack_size);
  }
  st.warps.assign((st.nthreads + 31) / 32, Warp{});
  std::vector<uint3> blocks;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) blocks.push_back({x, y, z});
  std::mt19937 rng(seed);
  if (order == REVERSE) std::reverse(blocks.begin(), blocks.end());
  if (order == RANDOM) std::shuffle(blocks.begin(), blocks.end(), rng);
  std::vector<unsigned> perm(st.nthreads);
  for (const uint3& b : blocks) {
    st.bidx = b; st.bar_gen = st.bar_count = st.ndone = 0;
#if !defined(__SANITIZE_ADDRESS__)
    if (__start_cuemu_smem) std::memset(__start_cuemu_smem, 0xFF, __stop_cuemu_smem - __start_cuemu_smem);
#endif
    std::fill(st.dyn_smem.begin(), st.dyn_smem.end(), ~0ull);
    for (auto& w : st.warps) for (auto& r : w.r) r.used = false;
    for (unsigned i = 0; i < st.nthreads; ++i) {
      Fiber& f = st.f[i];
      f.linear = i; f.lane = i % 32; f.warp = i / 32; f.state = READY; f.bar_gen = 0;
      f.tid = {i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
#ifdef CUEMU_UCONTEXT
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack; f.ctx.uc_stack.ss_size = st.stack_size; f.ctx.uc_link = nullptr;
      makecontext(&f.ctx, (void (*)())fiber_main, 0);
#else
      uintptr_t top = ((uintptr_t)f.stack + st.stack_size) & ~uintptr_t(15);
      uint64_t* sp = (uint64_t*)(top - 72);
      std::memset(sp, 0, 72);
      ((uint32_t*)sp)[0] = 0x1F80;                  // MXCSR default
      ((uint16_t*)sp)[2] = 0x037F;                  // x87 control word default
      sp[7] = (uint64_t)(void*)&fiber_main;         // "return address" at top-16
      f.sp = sp;
#endif
      perm[i] = i;
    }
    while (st.ndone < st.nthreads) {
      if (order == REVERSE) std::reverse(perm.begin(), perm.end());
      if (order == RANDOM) std::shuffle(perm.begin(), perm.end(), rng);
      st.progress = false;
      for (unsigned i : perm) {
        Fiber& f = st.f[i];
        if (f.state == DONE) continue;
        st.cur = &f;
#ifdef CUEMU_UCONTEXT
        swapcontext(&st.sched, &f.ctx);
#else
        cuemu_switch(&st.sched_sp, f.sp);
#endif
        if (!st.error.empty()) return -1;
      }
      if (!st.progress) {
        char m[128];
        snprintf(m, sizeof m, "deadlock in block (%u,%u,%u): %u threads at __syncthreads, %u exited",
                 b.x, b.y, b.z, st.bar_count, st.ndone);
        st.error = std::string(m) + " (or a warp collective whose lanes never all arrive)";
        return -1;
      }
    }
  }
  return 0;
}

// The kernel as a plain function over an argument array: one std::function type for every
// kernel, so a library of thousands of kernels compiles without one instantiation each.
__attribute__((noinline)) inline int launch_args(dim3 grid, dim3 block, size_t dyn_smem, int order, unsigned seed,
                       void (*fn)(void**), void** args) {
  return launch(grid, block, dyn_smem, order, seed, [fn, args] { fn(args); });
}
}  // namespace cuemu

// ---- built-in variables & intrinsics as kernels see them ------------------------------------
#define threadIdx (::cuemu::st.cur->tid)
#define blockIdx (::cuemu::st.bidx)
#define blockDim (::cuemu::st.block)
#define gridDim (::cuemu::st.grid)
static constexpr int warpSize = 32;

inline void __syncthreads() { cuemu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  cuemu::warp_rdv<int>(mask, 0, [](const uint64_t*, unsigned, unsigned, uint64_t, int, int) { return 0; });
}
inline void __threadfence() {}
inline void __threadfence_block() {}

// Shuffles: value from lane src (within segments of `width`); out-of-segment -> own value (as CUDA).
#define CUEMU_SHFL(NAME, SRC)                                                                        \
  template <class T> inline T NAME(unsigned mask, T v, int d, int width = 32) {                     \
    struct P { static uint64_t rd(const uint64_t* val, unsigned lane, unsigned m, uint64_t own,     \
                                  int d, int w) {                                                    \
      int seg = (int)lane / w * w; int src = SRC;                                                   \
      return (src < 0 || !(m >> src & 1)) ? own : val[src]; } };                                    \
    return cuemu::unpack<T>(cuemu::warp_rdv<uint64_t>(mask, cuemu::pack(v), &P::rd, d, width));     \
  }
CUEMU_SHFL(__shfl_sync, (seg + ((d % w) + w) % w))
CUEMU_SHFL(__shfl_down_sync, ((int)lane % w + d < w ? (int)lane + d : -1))
CUEMU_SHFL(__shfl_up_sync, ((int)lane % w - d >= 0 ? (int)lane - d : -1))
CUEMU_SHFL(__shfl_xor_sync, (((int)lane ^ d) >= seg && ((int)lane ^ d) < seg + w ? (int)lane ^ d : -1))
#undef CUEMU_SHFL

inline unsigned __ballot_sync(unsigned mask, int p) {
  return cuemu::warp_rdv<unsigned>(mask, p != 0, [](const uint64_t* v, unsigned, unsigned m, uint64_t, int, int) {
    unsigned b = 0; for (int l = 0; l < 32; ++l) if ((m >> l & 1) && v[l]) b |= 1u << l; return b; });
}
inline int __any_sync(unsigned m, int p) { return __ballot_sync(m, p) != 0; }
inline int __all_sync(unsigned m, int p) { return __ballot_sync(m, p) == m; }
inline unsigned __activemask() {
  unsigned m = 0, base = cuemu::st.cur->warp * 32;
  for (unsigned l = 0; l < 32 && base + l < cuemu::st.nthreads; ++l)
    if (cuemu::st.f[base + l].state != cuemu::DONE) m |= 1u << l;
  return m;
}

// Atomics: trivially atomic, only one fiber runs at a time.
template <class T> inline T atomicAdd(T* p, T v) { T o = *p; *p = o + v; return o; }
template <class T> inline T atomicSub(T* p, T v) { T o = *p; *p = o - v; return o; }
template <class T> inline T atomicMax(T* p, T v) { T o = *p; *p = o > v ? o : v; return o; }
template <class T> inline T atomicMin(T* p, T v) { T o = *p; *p = o < v ? o : v; return o; }
template <class T> inline T atomicExch(T* p, T v) { T o = *p; *p = v; return o; }
template <class T> inline T atomicCAS(T* p, T c, T v) { T o = *p; if (o == c) *p = v; return o; }

// Math: fast-math intrinsics map to the precise libm functions (compare with a tolerance!).
template <class T> inline T __ldg(const T* p) { return *p; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __int_as_float(int i) { return cuemu::unpack<float>((uint32_t)i); }
inline int __float_as_int(float f) { return (int)(uint32_t)cuemu::pack(f); }
inline int __float2int_rn(float f) { return (int)nearbyintf(f); }

"""
