// The emulator's scheduler: one std::thread per CUDA thread of a block, blocks one after another.
//
// A block runs in phases separated by its barriers. In a phase every thread of the block runs
// until it reaches a __syncthreads or returns; then, if every thread is at the same barrier, the
// next phase starts; if all returned, the next block starts; otherwise (some at a barrier, some
// returned, or threads at different barriers) the launch fails with a message. Within a phase the
// threads run either all at once (CONCURRENT) or one at a time in a chosen order (FORWARD,
// REVERSE, SHUFFLED: a seeded permutation per phase), which makes a missing __syncthreads give
// wrong results deterministically rather than by chance.
#include "cuda_host.h"
#include "emulator.h"

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

extern "C" char __start_osft_emu_shared[] __attribute__((weak));
extern "C" char __stop_osft_emu_shared[] __attribute__((weak));

namespace osft_emu {
thread_local uint3 thread_idx, block_idx;
thread_local dim3 block_dim, grid_dim;

namespace {
enum Mode { CONCURRENT = 0, FORWARD = 1, REVERSE = 2, SHUFFLED = 3 };
const int RUNNING = -2, EXITED = -1;  // thread states; >= 0: waiting at that barrier site

struct Abort {};

struct Launch {
    std::mutex m;
    unsigned n = 0;  // threads per block
    int mode = CONCURRENT;
    uint64_t rng = 0;
    std::vector<int> state;
    std::vector<unsigned> order;  // serial modes: the phase's order; order[pos] runs
    size_t pos = 0;
    std::unique_ptr<std::condition_variable[]> cv;  // one per thread
    uint64_t block = 0, blocks = 0;
    dim3 grid{}, bdim{};
    bool done = false, failed = false;
    std::string error;
    std::function<void(void**)> kernel;
    void** params = nullptr;

    uint64_t next_random() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
    }
    void new_order() {
        order.resize(n);
        for (unsigned i = 0; i < n; i++) order[i] = mode == REVERSE ? n - 1 - i : i;
        if (mode == SHUFFLED)
            for (unsigned i = n - 1; i > 0; i--) std::swap(order[i], order[next_random() % (i + 1)]);
        pos = 0;
    }
    bool my_turn(unsigned me) const { return state[me] == RUNNING && (mode == CONCURRENT || order[pos] == me); }
    void wake_all() {
        for (unsigned i = 0; i < n; i++) cv[i].notify_one();
    }
    void wake_turn() {
        if (mode == CONCURRENT) wake_all();
        else cv[order[pos]].notify_one();
    }
    void fail(std::string msg) {
        if (!failed) error = std::move(msg);
        failed = true;
        wake_all();
    }
    static void poison_shared() {
        if (__start_osft_emu_shared && __stop_osft_emu_shared)
            memset(__start_osft_emu_shared, 0xff, (size_t)(__stop_osft_emu_shared - __start_osft_emu_shared));
    }
    // Every thread has stopped (at a barrier or returned): start the next phase or block, or fail.
    void phase_end() {
        unsigned exited = 0, waiting = 0;
        int site = -1;
        bool same = true;
        for (unsigned i = 0; i < n; i++) {
            if (state[i] == EXITED) exited++;
            else {
                waiting++;
                if (site >= 0 && state[i] != site) same = false;
                site = state[i];
            }
        }
        char where[96];
        snprintf(where, sizeof where, " (block %llu of %llu)", (unsigned long long)block, (unsigned long long)blocks);
        if (waiting && exited) return fail("__syncthreads reached by " + std::to_string(waiting) + " of " + std::to_string(n) + " threads; the others returned" + where);
        if (!same) return fail(std::string("threads of one block wait at different __syncthreads") + where);
        if (waiting) {
            for (unsigned i = 0; i < n; i++) state[i] = RUNNING;
        } else {
            if (++block == blocks) {
                done = true;
                return wake_all();
            }
            poison_shared();
            for (unsigned i = 0; i < n; i++) state[i] = RUNNING;
        }
        new_order();
        wake_turn();
    }
    // Thread `me` stops (state `s`); the next thread of the phase runs, or the phase ends.
    void stop(unsigned me, int s) {
        state[me] = s;
        if (failed) return;
        if (mode == CONCURRENT) {
            for (unsigned i = 0; i < n; i++)
                if (state[i] == RUNNING) return;
            return phase_end();
        }
        if (++pos < order.size()) return cv[order[pos]].notify_one();
        phase_end();
    }
};

thread_local Launch* current = nullptr;
thread_local unsigned me = 0;
std::mutex launch_mutex;  // one launch at a time: __shared__ storage is per kernel, not per launch
std::mutex atomic_mutex;

void set_indices(Launch& l, unsigned t) {
    uint64_t b = l.block;
    block_idx = {(unsigned)(b % l.grid.x), (unsigned)(b / l.grid.x % l.grid.y), (unsigned)(b / l.grid.x / l.grid.y)};
    thread_idx = {t % l.bdim.x, t / l.bdim.x % l.bdim.y, t / l.bdim.x / l.bdim.y};
}

void worker(Launch* l, unsigned t) {
    current = l;
    me = t;
    block_dim = l->bdim;
    grid_dim = l->grid;
    for (;;) {
        {
            std::unique_lock<std::mutex> g(l->m);
            l->cv[t].wait(g, [&] { return l->done || l->failed || l->my_turn(t); });
            if (l->done || l->failed) return;
            set_indices(*l, t);
        }
        try {
            l->kernel(l->params);
        } catch (Abort&) {
            return;
        }
        std::lock_guard<std::mutex> g(l->m);
        l->stop(t, EXITED);
    }
}
}  // namespace

void syncthreads(int site) {
    Launch* l = current;
    std::unique_lock<std::mutex> g(l->m);
    l->stop(me, site);
    l->cv[me].wait(g, [&] { return l->failed || l->my_turn(me); });
    if (l->failed) throw Abort{};
}

void trap() {
    Launch* l = current;
    {
        std::lock_guard<std::mutex> g(l->m);
        l->fail("__trap() in a kernel");
    }
    throw Abort{};
}

void atomic_begin() { atomic_mutex.lock(); }
void atomic_end() { atomic_mutex.unlock(); }
}  // namespace osft_emu

extern "C" {
size_t osft_emu_kernel_count() { return osft_emu::kernels().size(); }
const char* osft_emu_kernel_name(size_t i) { return osft_emu::kernels()[i].name; }

// Launch kernel `name` like cuLaunchKernel: grid and block (x, y, z), `params` one pointer per
// argument. `mode` is the phase schedule (0 concurrent, 1 forward, 2 reverse, 3 shuffled with
// `seed`). Returns 0, or 1 with a message in `err` (unknown kernel, bad sizes, a barrier only
// some threads reach, threads at different barriers, a trap).
int osft_emu_launch(const char* name, const unsigned* grid, const unsigned* block, void** params, int mode,
                    unsigned long long seed, char* err, size_t err_len) {
    using namespace osft_emu;
    auto failed = [&](const std::string& msg) {
        snprintf(err, err_len, "%s: %s", name, msg.c_str());
        return 1;
    };
    const Kernel* k = nullptr;
    for (auto& e : kernels())
        if (strcmp(e.name, name) == 0) k = &e;
    if (!k) return failed("no such kernel");
    uint64_t threads = (uint64_t)block[0] * block[1] * block[2];
    uint64_t blocks = (uint64_t)grid[0] * grid[1] * grid[2];
    if (threads == 0 || threads > 1024 || blocks == 0 || grid[1] > 65535 || grid[2] > 65535)
        return failed("launch sizes out of CUDA's range");
    std::lock_guard<std::mutex> serial(launch_mutex);
    Launch l;
    l.n = (unsigned)threads;
    l.mode = mode;
    l.rng = seed * 0x9e3779b97f4a7c15ull + 1;
    l.state.assign(l.n, RUNNING);
    l.cv.reset(new std::condition_variable[l.n]);
    l.blocks = blocks;
    l.grid = {grid[0], grid[1], grid[2]};
    l.bdim = {block[0], block[1], block[2]};
    l.kernel = k->call;
    l.params = params;
    Launch::poison_shared();
    l.new_order();
    std::vector<std::thread> pool;
    pool.reserve(l.n);
    for (unsigned t = 0; t < l.n; t++) pool.emplace_back(worker, &l, t);
    for (auto& t : pool) t.join();
    return l.failed ? failed(l.error) : 0;
}

// Whether the shared-memory section was found (its poisoning works).
int osft_emu_shared_bytes() { return __start_osft_emu_shared ? (int)(__stop_osft_emu_shared - __start_osft_emu_shared) : -1; }
}
