// XLA FFI custom call that steps a batch of MuJoCo environments with the C engine.
//
// Why C++ and not jax.pure_callback: a Python callback costs ~0.2-0.3 ms per call (GIL,
// host-array wrapping, numpy packing), which at batch 16 is as long as the physics itself. This
// handler is called by XLA directly on the buffers it owns, with no Python on the path, and
// splits the batch into chunks run on XLA's own intra-op thread pool (FFI ThreadPool context).
// Why not a pool of our own: XLA's idle pool threads spin looking for work for a while before
// sleeping, so extra threads of ours competed with them for the cores (on 2 cores, parallel
// stepping was no faster than serial); tasks handed to XLA's pool are picked up by exactly
// those spinning threads.
//
// Contract (offbench/envs/physics.py, MujocoPhysics): input rows are
// [qpos, qvel, qacc_warmstart, ctrl] (float32), output rows are
// [qpos, qvel, qacc_warmstart, xpos[main_body], cfrc_ext (nbody*6; zeros unless contact_forces)].
// Every call sets the whole state it reads, so the result depends only on the inputs.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mujoco/mujoco.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Spins for at most `budget` waiting for `ready()`, then sleeps in short steps until it is.
// Used only to wait for a chunk another thread is stepping right now (at most one chunk long).
template <typename Ready>
void WaitUntil(Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
  for (int i = 1; !ready(); ++i) {
    if (i % 64 == 0 && std::chrono::steady_clock::now() >= deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    } else {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#else
      std::this_thread::yield();
#endif
    }
  }
}

// Work shared by the calling thread and the tasks it schedules: chunks are claimed from an
// atomic counter, so a task that starts late (pool busy) finds nothing left and returns, and the
// caller never waits for a task to *start*, only for claimed chunks to finish. Held by
// shared_ptr because a late task may still look at the counter after the call returned.
struct Chunks {
  std::function<void(int64_t)> run;
  int64_t count = 0;
  std::atomic<int64_t> next{0}, done{0};

  void Drain() {
    for (int64_t c = next.fetch_add(1); c < count; c = next.fetch_add(1)) {
      run(c);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

// Models by a content hash chosen in Python (a stable id keeps the compiled HLO, and so JAX's
// persistent compilation cache, identical across processes; a raw pointer would not).
std::mutex g_models_mu;
std::unordered_map<int64_t, const mjModel*> g_models;

const mjModel* FindModel(int64_t id) {
  std::lock_guard<std::mutex> lock(g_models_mu);
  auto it = g_models.find(id);
  return it == g_models.end() ? nullptr : it->second;
}

// Scratch mjData per model, checked out for the length of one chunk of work (calls may run
// concurrently from several XLA threads, e.g. a training and an evaluation env of one task).
std::mutex g_scratch_mu;
std::unordered_map<const mjModel*, std::vector<mjData*>> g_scratch;  // lives as long as the process

mjData* Checkout(const mjModel* m) {
  {
    std::lock_guard<std::mutex> lock(g_scratch_mu);
    auto& list = g_scratch[m];
    if (!list.empty()) {
      mjData* d = list.back();
      list.pop_back();
      return d;
    }
  }
  return mj_makeData(m);
}

void Checkin(const mjModel* m, mjData* d) {
  std::lock_guard<std::mutex> lock(g_scratch_mu);
  g_scratch[m].push_back(d);
}

constexpr int kStateIn = mjSTATE_QPOS | mjSTATE_QVEL | mjSTATE_WARMSTART | mjSTATE_CTRL;
constexpr int kStateOut = mjSTATE_QPOS | mjSTATE_QVEL | mjSTATE_WARMSTART;

// Steps envs [lo, hi) of the batch with one scratch mjData.
void StepRange(const mjModel* m, int64_t lo, int64_t hi, const float* in, float* out,
               int64_t n_in, int64_t n_out, int64_t frame_skip, int64_t main_body,
               bool contact_forces) {
  mjData* d = Checkout(m);
  const int n_state_out = mj_stateSize(m, kStateOut);
  std::vector<mjtNum> state(std::max<int64_t>(n_in, n_state_out));
  for (int64_t i = lo; i < hi; ++i) {
    const float* row_in = in + i * n_in;
    float* row_out = out + i * n_out;
    std::copy(row_in, row_in + n_in, state.begin());
    mj_setState(m, d, state.data(), kStateIn);
    for (int64_t k = 0; k < frame_skip; ++k) mj_step(m, d);
    mj_getState(m, d, state.data(), kStateOut);
    std::copy(state.begin(), state.begin() + n_state_out, row_out);
    float* extras = row_out + n_state_out;
    for (int k = 0; k < 3; ++k) extras[k] = static_cast<float>(d->xpos[3 * main_body + k]);
    float* cfrc = extras + 3;
    const int ncfrc = 6 * m->nbody;
    if (contact_forces) {
      mj_rnePostConstraint(m, d);
      for (int k = 0; k < ncfrc; ++k) cfrc[k] = static_cast<float>(d->cfrc_ext[k]);
    } else {
      std::fill(cfrc, cfrc + ncfrc, 0.0f);
    }
  }
  Checkin(m, d);
}

ffi::Error MjStepImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> in,
                      ffi::ResultBuffer<ffi::F32> out, int64_t model_id, int64_t frame_skip,
                      int64_t main_body, bool contact_forces, int64_t nthread,
                      int64_t min_chunk) {
  const mjModel* m = FindModel(model_id);
  if (m == nullptr)
    return ffi::Error::InvalidArgument("offbench_mujoco_step: model not registered");
  auto in_dims = in.dimensions();
  auto out_dims = out->dimensions();
  if (in_dims.size() == 0 || out_dims.size() == 0)
    return ffi::Error::InvalidArgument("offbench_mujoco_step: inputs must be at least 1-D");
  const int64_t n_in = in_dims[in_dims.size() - 1], n_out = out_dims[out_dims.size() - 1];
  if (n_in != mj_stateSize(m, kStateIn) || n_out != mj_stateSize(m, kStateOut) + 3 + 6 * m->nbody)
    return ffi::Error::InvalidArgument("offbench_mujoco_step: row sizes do not match the model");
  const int64_t batch = in.element_count() / n_in;
  const float* src = in.typed_data();
  float* dst = out->typed_data();
  // One chunk per thread (the calling thread is one of XLA's), capped by `nthread`, and at
  // least `min_chunk` envs each: for tiny batches handing work over costs more than it saves.
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(nthread, pool.num_threads()));
  const int64_t chunks = std::min<int64_t>(threads, std::max<int64_t>(1, batch / min_chunk));
  if (chunks <= 1) {
    StepRange(m, 0, batch, src, dst, n_in, n_out, frame_skip, main_body, contact_forces);
    return ffi::Error::Success();
  }
  auto work = std::make_shared<Chunks>();
  work->count = chunks;
  work->run = [=](int64_t c) {
    StepRange(m, batch * c / chunks, batch * (c + 1) / chunks, src, dst, n_in, n_out,
              frame_skip, main_body, contact_forces);
  };
  for (int64_t t = 1; t < chunks; ++t) pool.Schedule([work] { work->Drain(); });
  work->Drain();
  WaitUntil([&] { return work->done.load(std::memory_order_acquire) == chunks; });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OffbenchMujocoStep, MjStepImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("model_id")
                                  .Attr<int64_t>("frame_skip")
                                  .Attr<int64_t>("main_body")
                                  .Attr<bool>("contact_forces")
                                  .Attr<int64_t>("nthread")
                                  .Attr<int64_t>("min_chunk"));

// Called from Python (ctypes) before the first step of a model; the caller keeps it alive.
extern "C" void OffbenchRegisterModel(int64_t id, const mjModel* m) {
  std::lock_guard<std::mutex> lock(g_models_mu);
  g_models[id] = m;
}
