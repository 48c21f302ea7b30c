// The emulator's scheduler (tests/emu/cuda_emu.hpp): runs a launch block by block, one fiber
// per thread, releasing warps and blocks at their barriers; plus the two cudart calls kernels
// make themselves.
#include "cuda_emu.hpp"
namespace emu {
Fiber* g_cur = nullptr;
uint3 g_block;
dim3 g_blockDim, g_gridDim;
std::vector<unsigned char> g_dyn;
double g_warp_vals[64][32];
std::vector<std::function<void()>>* g_capture = nullptr;
jmp_buf g_main_jb;
static ucontext_t g_start;  // only to enter a fiber the first time
static std::function<void()>* g_body = nullptr;
// A fiber's whole life: run the current block's body, park as DONE, repeat when resumed.
static void entry() {
  for (;;) {
    (*g_body)();
    yield(DONE);
  }
}
// Runs fiber f until it parks (finishes its body or waits at a barrier).
static void resume(Fiber& f) {
  g_cur = &f;
  if (_setjmp(g_main_jb)) return;
  if (f.started) _longjmp(f.jb, 1);
  f.started = true;
  swapcontext(&g_start, &f.ctx);  // never returns here: the fiber longjmps back
}
static void die(const char* what, dim3 b) {
  std::fprintf(stderr, "EMU ERROR: %s in block (%u,%u,%u)\n", what, b.x, b.y, b.z);
  std::abort();
}
void run(dim3 grid, dim3 block, size_t smem, std::function<void()> body) {
  const int nt = block.x * block.y * block.z;
  if (nt % 32 != 0 || nt > 1024) die("block size", dim3());
  if (grid.y > 65535 || grid.z > 65535) die("grid dims", dim3());
  static std::vector<Fiber> fibers(1024);
  static bool init = false;
  const size_t kStack = 256 * 1024;
  if (!init) {
    for (auto& f : fibers) {
      f.stack = static_cast<char*>(std::malloc(kStack));
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack;
      f.ctx.uc_stack.ss_size = kStack;
      f.ctx.uc_link = nullptr;
      makecontext(&f.ctx, entry, 0);
    }
    init = true;
  }
  g_body = &body;
  g_blockDim = block;
  g_gridDim = grid;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        g_block = make_uint3(bx, by, bz);
        g_dyn.assign(smem + 16, 0xFF);  // NaN poison
        for (int t = 0; t < nt; ++t) {
          Fiber& f = fibers[t];
          f.tid = make_uint3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
          f.lane = t % 32;
          f.warp = t / 32;
          f.state = RUN;
        }
        for (;;) {
          for (int t = 0; t < nt; ++t)
            if (fibers[t].state == RUN) resume(fibers[t]);
          int done = 0, wb = 0;
          for (int t = 0; t < nt; ++t) {
            done += fibers[t].state == DONE;
            wb += fibers[t].state == WAIT_BLOCK;
          }
          if (done == nt) break;
          bool released = false;
          for (int w = 0; w < nt / 32; ++w) {
            int ww = 0, alive = 0;
            for (int l = 0; l < 32; ++l) {
              const int s = fibers[w * 32 + l].state;
              ww += s == WAIT_WARP;
              alive += s != DONE;
            }
            if (ww > 0 && ww == alive) {
              if (alive != 32) die("warp barrier/shuffle with exited lanes", g_block);
              for (int l = 0; l < 32; ++l) fibers[w * 32 + l].state = RUN;
              released = true;
            }
          }
          if (released) continue;
          if (wb == nt - done) {
            for (int t = 0; t < nt; ++t)
              if (fibers[t].state == WAIT_BLOCK) fibers[t].state = RUN;
            continue;
          }
          die("deadlock: divergent barriers", g_block);
        }
      }
}
}  // namespace emu
extern "C" {
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
  if (emu::g_capture != nullptr) {
    emu::g_capture->push_back([=] { std::memset(p, v, n); });
    return cudaSuccess;
  }
  std::memset(p, v, n);
  return cudaSuccess;
}
}
