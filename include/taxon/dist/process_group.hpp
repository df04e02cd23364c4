#pragma once
// Many processes, one job: who this process is (torchrun / SLURM / single) and the collectives between processes,
// on LibTorch's own c10d engine (TCPStore rendezvous; ProcessGroupGloo on CPU, ProcessGroupNCCL on CUDA).
//
// Failure design: every collective waits at most `timeout`. When one fails or times out, this rank asks the store
// why before throwing "dist.peer-failed": a rank that raised left its text under taxon/failed/<r>
// (report_failure), a rank that was killed stopped bumping its heartbeat counter taxon/alive/<r> (a thread per
// rank), a rank that returned normally left taxon/left/<r>, and an unreachable store means rank 0 (its host) is
// gone. Counters, not clocks, so nodes need no synchronised time; the store, not the transport, because Gloo's own
// error names a socket address, not a rank.
#include "taxon/core/compat.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/options.hpp"

#include <ATen/ATen.h>
#include <c10/core/Device.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#if TAXON_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if TAXON_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace taxon::dist {

// Who this process is, read from the launcher's environment.
struct LaunchEnvironment {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr;  // empty for a single process
  int master_port = 0;
  std::string launcher;  // "torchrun", "slurm" or "single"
};

// torchrun's default rendezvous port, used under SLURM when MASTER_PORT is not set.
inline constexpr int default_master_port = 29500;

namespace detail {
inline const char* env_or_null(const char* name) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : nullptr;
}

inline int parse_env_int(const char* name, const char* text, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  TAXON_CHECK(errno == 0 && end != text && *end == '\0' && v >= lo && v <= hi, "dist.bad-launch-environment",
              name, "='", text, "' is not an integer in [", lo, ", ", hi, "]");
  return static_cast<int>(v);
}

inline int required_env_int(const char* name, const char* launcher, long lo, long hi) {
  const char* v = env_or_null(name);
  TAXON_CHECK(v != nullptr, "dist.bad-launch-environment", name, " is not set, but the ", launcher,
              " launcher's other variables are");
  return parse_env_int(name, v, lo, hi);
}

// First host of a SLURM node list: "gpu[07-09,12],cpu1" -> "gpu07", "a,b" -> "a".
inline std::string first_slurm_host(const std::string& list) {
  std::string first;
  int depth = 0;
  for (char c : list) {
    if (c == ',' && depth == 0) break;
    depth += (c == '[') - (c == ']');
    first += c;
  }
  const auto open = first.find('[');
  if (open == std::string::npos) return first;
  std::string range = first.substr(open + 1);
  range = range.substr(0, range.find_first_of(",-]"));
  return first.substr(0, open) + range;
}

// rank, world size and local rank from a launcher's three variables (torchrun's or SLURM's names).
inline void read_ranks(LaunchEnvironment& env, const char* launcher, const char* rank_var, const char* size_var,
                       const char* local_var) {
  constexpr long max_ranks = 1L << 24;
  env.world_size = required_env_int(size_var, launcher, 1, max_ranks);
  env.rank = required_env_int(rank_var, launcher, 0, max_ranks);
  TAXON_CHECK(env.rank < env.world_size, "dist.bad-launch-environment", rank_var, "=", env.rank, " is not below ",
              size_var, "=", env.world_size);
  const char* local = env_or_null(local_var);
  env.local_rank = local != nullptr ? parse_env_int(local_var, local, 0, env.rank) : 0;
}
}  // namespace detail

// torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. SLURM: SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID, first host of SLURM_NODELIST (MASTER_ADDR/MASTER_PORT override; port default 29500).
// Nothing set: single. Contradictory/invalid values: TaxonError "dist.bad-launch-environment" naming the variable.
inline LaunchEnvironment launch_environment_from_env() {
  LaunchEnvironment env;
  if (detail::env_or_null("RANK") != nullptr || detail::env_or_null("WORLD_SIZE") != nullptr) {
    env.launcher = "torchrun";
    detail::read_ranks(env, "torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK");
    const char* addr = detail::env_or_null("MASTER_ADDR");
    TAXON_CHECK(addr != nullptr || env.world_size == 1, "dist.bad-launch-environment",
                "MASTER_ADDR is not set but WORLD_SIZE=", env.world_size);
    if (addr != nullptr) {
      env.master_addr = addr;
      env.master_port = detail::required_env_int("MASTER_PORT", "torchrun", 1, 65535);
    }
    return env;
  }
  if (detail::env_or_null("SLURM_PROCID") != nullptr) {
    env.launcher = "slurm";
    detail::read_ranks(env, "SLURM", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID");
    if (const char* addr = detail::env_or_null("MASTER_ADDR")) {
      env.master_addr = addr;
    } else {
      const char* list = detail::env_or_null("SLURM_JOB_NODELIST");
      if (list == nullptr) list = detail::env_or_null("SLURM_NODELIST");
      TAXON_CHECK(list != nullptr || env.world_size == 1, "dist.bad-launch-environment",
                  "neither MASTER_ADDR nor SLURM_NODELIST is set but SLURM_NTASKS=", env.world_size);
      if (list != nullptr) env.master_addr = detail::first_slurm_host(list);
    }
    const char* port = detail::env_or_null("MASTER_PORT");
    env.master_port = port != nullptr ? detail::parse_env_int("MASTER_PORT", port, 1, 65535) : default_master_port;
    return env;
  }
  env.launcher = "single";
  return env;
}

enum class ReduceOp { sum, max, min };

// What this rank's collectives cost so far (all handles of one group share it): for logs and benchmarks.
struct CollectiveStats {
  std::int64_t calls = 0;          // backend collectives (a gather counts its shape exchange too)
  std::int64_t payload_bytes = 0;  // bytes this rank contributed (wire traffic depends on the algorithm)
  double seconds = 0;              // wall time inside them, including waiting for slower ranks
};

struct ProcessGroupOptions {
  TAXON_ARG(std::chrono::milliseconds, timeout) = std::chrono::seconds(300);  // every collective and the rendezvous
  TAXON_ARG(c10::Device, device) = c10::Device(c10::kCPU);                    // CPU -> Gloo, CUDA -> NCCL
};

namespace detail {
inline std::vector<std::uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
inline std::string string_of(const std::vector<std::uint8_t>& b) { return {b.begin(), b.end()}; }
inline std::string failed_key(int r) { return "taxon/failed/" + std::to_string(r); }
inline std::string alive_key(int r) { return "taxon/alive/" + std::to_string(r); }
inline std::string left_key(int r) { return "taxon/left/" + std::to_string(r); }

// A connection of its own to the rendezvous store (rank 0 hosts the server).
// Workers are not counted (waitWorkers off): Gloo's own rendezvous through the store waits for every rank.
inline c10::intrusive_ptr<::c10d::Store> connect_store(const LaunchEnvironment& env, bool server,
                                                       std::chrono::milliseconds timeout) {
  ::c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(env.master_port);
  o.isServer = server;
  o.numWorkers = static_cast<std::size_t>(env.world_size);
  o.waitWorkers = false;
  o.timeout = timeout;
  return c10::make_intrusive<::c10d::TCPStore>(env.master_addr, o);
}

// Shared state behind ProcessGroup handles: the c10d backend, the side connections and the heartbeat thread.
struct GroupState {
  int rank = 0, world_size = 1;
  LaunchEnvironment env;
  ProcessGroupOptions options;
  c10::intrusive_ptr<TAXON_C10D_BACKEND> backend;
  c10::intrusive_ptr<::c10d::Store> control;  // main thread only: report_failure, diagnosis
  std::mutex control_mutex;
  std::chrono::milliseconds heartbeat_period{1000};
  std::thread heartbeat;
  std::mutex stop_mutex;
  std::condition_variable stop_cv;
  bool stopping = false;
  CollectiveStats stats;

  ~GroupState() {
    if (control) {
      try {
        control->set(left_key(rank), bytes_of("1"));
        if (rank == 0) wait_for_peers_to_leave();
      } catch (...) {  // the store host may be gone already: nothing left to tell
      }
    }
    {
      std::lock_guard<std::mutex> lock(stop_mutex);
      stopping = true;
    }
    stop_cv.notify_all();
    if (heartbeat.joinable()) heartbeat.join();
  }

  // Rank 0 hosts the store: it stays (bounded) until every peer has left or died, so a peer still diagnosing a
  // failure can read the store instead of blaming rank 0's normal exit.
  void wait_for_peers_to_leave() {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now(), deadline = start + heartbeat_period * 8;
    std::vector<std::int64_t> last(world_size, -1);
    std::vector<clock::time_point> changed(world_size, start);
    control->setTimeout(std::max(heartbeat_period * 4, std::chrono::milliseconds(200)));
    while (clock::now() < deadline) {
      bool all_gone = true;
      for (int r = 1; r < world_size; ++r) {
        if (control->check({left_key(r)})) continue;
        const std::int64_t count = control->add(alive_key(r), 0);
        if (count != last[r]) last[r] = count, changed[r] = clock::now();
        if (clock::now() - changed[r] < heartbeat_period * 5 / 2) all_gone = false;
      }
      if (all_gone) return;
      std::this_thread::sleep_for(std::min(heartbeat_period / 2, std::chrono::milliseconds(20)));
    }
  }

  void start_heartbeat(c10::intrusive_ptr<::c10d::Store> store) {
    heartbeat = std::thread([this, store = std::move(store)] {
      const std::string key = alive_key(rank);
      std::unique_lock<std::mutex> lock(stop_mutex);
      while (!stopping) {
        try {
          store->add(key, 1);
        } catch (...) {  // store host gone: peers learn it from their own failing calls
          return;
        }
        stop_cv.wait_for(lock, heartbeat_period, [this] { return stopping; });
      }
    });
  }

  // Why did `op` fail? Names the rank(s) from the store's records; always throws.
  [[noreturn]] void throw_peer_failure(const char* op, const std::string& cause) {
    const std::string where = c10::str("rank ", rank, " of ", world_size, " was in ", op, " (timeout ",
                                       options.timeout().count(), " ms); the collective said: ", cause);
    std::lock_guard<std::mutex> lock(control_mutex);
    std::string relayed;
    try {
      control->setTimeout(std::max(heartbeat_period * 4, std::chrono::milliseconds(200)));
      std::vector<std::int64_t> before(world_size, -1);
      for (int r = 0; r < world_size; ++r) {
        if (r == rank) continue;
        if (control->check({failed_key(r)})) {
          const std::string text = string_of(control->get(failed_key(r)));
          // A rank that only relays another's failure is not the origin: name the origin first.
          if (text.find("[taxon.dist.peer-failed]") == std::string::npos) {
            TAXON_FAIL("dist.peer-failed", "rank ", r, " failed: ", text, " (", where, ")");
          }
          if (relayed.empty()) relayed = c10::str("rank ", r, " reported: ", text);
        }
        before[r] = control->add(alive_key(r), 0);
      }
      std::this_thread::sleep_for(heartbeat_period * 5 / 2);
      int left = -1;
      for (int r = 0; r < world_size; ++r) {
        if (r == rank) continue;
        if (control->check({failed_key(r)})) {
          const std::string text = string_of(control->get(failed_key(r)));
          if (text.find("[taxon.dist.peer-failed]") == std::string::npos) {
            TAXON_FAIL("dist.peer-failed", "rank ", r, " failed: ", text, " (", where, ")");
          }
        }
        if (control->add(alive_key(r), 0) != before[r]) continue;
        // A rank that died is the cause; one that left normally (e.g. rank 0 after its own diagnosis) is not.
        if (!control->check({left_key(r)})) {
          TAXON_FAIL("dist.peer-failed", "rank ", r, " stopped responding: its heartbeat stopped (killed, crashed, ",
                     "or exited without report_failure) (", where, ")");
        }
        if (left < 0) left = r;
      }
      if (left >= 0) {
        TAXON_FAIL("dist.peer-failed", "rank ", left, " left the process group (its program returned or closed ",
                   "the group) while this rank still expected it (", where, ")");
      }
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      TAXON_FAIL("dist.peer-failed", "rank 0 (it hosts the store at ", env.master_addr, ":", env.master_port,
                 ") is unreachable: it died or exited (", where, "; the store said: ", e.what(), ")");
    }
    if (!relayed.empty()) TAXON_FAIL("dist.peer-failed", relayed, " (", where, ")");
    TAXON_FAIL("dist.peer-failed", "every peer is alive and none reported a failure, so a rank is stuck elsewhere or ",
               "called a different collective (", where, ")");
  }
};
}  // namespace detail

// A handle (cheap to copy; shared state). world_size 1 needs no store, and every collective is the identity.
class ProcessGroup {
 public:
  static ProcessGroup single() { return ProcessGroup(); }

  static ProcessGroup from_environment(const ProcessGroupOptions& options = {}) {
    return connect(launch_environment_from_env(), options);
  }

  // world_size 1 with no master_addr is the identity group; with one (torchrun --nproc-per-node 1) it is a real
  // group of one, so the backend path can be exercised on a single device.
  static ProcessGroup connect(const LaunchEnvironment& env, const ProcessGroupOptions& options = {}) {
    TAXON_CHECK(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size, "dist.bad-launch-environment",
                "rank ", env.rank, " is not in [0, world_size = ", env.world_size, ")");
    TAXON_CHECK(options.timeout().count() > 0, "dist.bad-option", "timeout must be positive, got ",
                options.timeout().count(), " ms");
    ProcessGroup group;
    if (env.world_size == 1 && env.master_addr.empty()) return group;
    TAXON_CHECK(!env.master_addr.empty() && env.master_port > 0 && env.master_port <= 65535,
                "dist.bad-launch-environment", "world_size ", env.world_size,
                " needs a master address and port, got '", env.master_addr, "':", env.master_port);
    // A write to a dead peer's socket must be an error to report, not SIGPIPE killing this rank silently (Python,
    // torchrun's usual host, ignores SIGPIPE at startup; a C++ program does not). A handler someone set stays.
    struct sigaction previous {};
    if (::sigaction(SIGPIPE, nullptr, &previous) == 0 && previous.sa_handler == SIG_DFL) ::signal(SIGPIPE, SIG_IGN);
    auto state = std::make_shared<detail::GroupState>();
    state->rank = env.rank;
    state->world_size = env.world_size;
    state->env = env;
    state->options = options;
    state->heartbeat_period = std::clamp(options.timeout() / 20, std::chrono::milliseconds(50),
                                         std::chrono::milliseconds(1000));
    c10::intrusive_ptr<::c10d::Store> store;
    try {
      store = detail::connect_store(env, env.rank == 0, options.timeout());
      state->control = detail::connect_store(env, false, options.timeout());
      state->start_heartbeat(detail::connect_store(env, false, options.timeout()));
    } catch (const std::exception& e) {
      TAXON_FAIL("dist.rendezvous-failed", "rank ", env.rank, " of ", env.world_size, " could not meet the others at ",
                 env.master_addr, ":", env.master_port, " within ", options.timeout().count(), " ms (", env.launcher,
                 " launcher): ", e.what());
    }
    auto prefixed = c10::make_intrusive<::c10d::PrefixStore>("taxon/pg", store);
    try {
      state->backend = make_backend(prefixed, env, options);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      TAXON_FAIL("dist.rendezvous-failed", "rank ", env.rank, " of ", env.world_size, " could not connect its ",
                 options.device().is_cuda() ? "NCCL" : "Gloo", " backend within ", options.timeout().count(),
                 " ms: ", e.what());
    }
    group.state_ = std::move(state);
    return group;
  }

  int rank() const { return state_ ? state_->rank : 0; }
  int world_size() const { return state_ ? state_->world_size : 1; }
  bool distributed() const { return world_size() > 1; }
  // The device whose tensors the collectives take: CPU for Gloo, the CUDA device for NCCL.
  c10::Device device() const { return state_ ? state_->options.device() : c10::Device(c10::kCPU); }
  std::chrono::milliseconds timeout() const {
    return state_ ? state_->options.timeout() : ProcessGroupOptions{}.timeout();
  }

  // In place on every rank; CPU half/bfloat16 are reduced in float (Gloo lacks them on 1.13).
  void all_reduce_(at::Tensor& t, ReduceOp op = ReduceOp::sum) {
    if (!state_) return;
    const bool widen = t.is_cpu() && (t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16);
    std::vector<at::Tensor> buf{widen ? t.to(at::kFloat) : t.contiguous()};
    ::c10d::AllreduceOptions o;
    o.reduceOp = op == ReduceOp::sum ? ::c10d::ReduceOp::SUM
                 : op == ReduceOp::max ? ::c10d::ReduceOp::MAX
                                       : ::c10d::ReduceOp::MIN;
    o.timeout = state_->options.timeout();
    run("all_reduce_", buf[0].nbytes(), [&] { return state_->backend->allreduce(buf, o); });
    if (!buf[0].is_same(t)) t.copy_(buf[0]);
  }

  // Same shape on every rank (checked: dist.shape-mismatch names the rank); concatenated on dim 0, rank order.
  at::Tensor all_gather(const at::Tensor& t) { return gather_impl(t, /*even=*/true, nullptr); }

  // Dim-0 sizes may differ per rank (the other dims and the dtype may not); concatenated on dim 0, rank order.
  // `rows_per_rank`, when given, receives each rank's dim-0 size (known from the shape exchange, no extra call).
  at::Tensor all_gather_uneven(const at::Tensor& t, std::vector<std::int64_t>* rows_per_rank = nullptr) {
    return gather_impl(t, /*even=*/false, rows_per_rank);
  }

  void broadcast_(at::Tensor& t, int root = 0) {
    if (!state_) return;
    TAXON_CHECK(root >= 0 && root < world_size(), "dist.bad-rank", "broadcast root ", root, " is not in [0, ",
                world_size(), ")");
    std::vector<at::Tensor> buf{t.contiguous()};
    ::c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = state_->options.timeout();
    run("broadcast_", buf[0].nbytes(), [&] { return state_->backend->broadcast(buf, o); });
    if (!buf[0].is_same(t)) t.copy_(buf[0]);
  }

  void barrier() {
    if (!state_) return;
    // A one-element all-reduce: Gloo's and NCCL's barriers differ in device handling across versions.
    at::Tensor token = at::zeros({1}, at::TensorOptions().device(state_->options.device()));
    all_reduce_(token);
  }

  CollectiveStats stats() const { return state_ ? state_->stats : CollectiveStats{}; }
  void reset_stats() {
    if (state_) state_->stats = {};
  }

  // Called by a rank about to exit on its own exception, so peers can name it and quote `what`.
  void report_failure(const std::string& what) {
    if (!state_) return;
    std::lock_guard<std::mutex> lock(state_->control_mutex);
    try {
      state_->control->set(detail::failed_key(state_->rank), detail::bytes_of(what));
    } catch (...) {  // the store host is gone: the peers find out on their own
    }
  }

 private:
  std::shared_ptr<detail::GroupState> state_;

  static c10::intrusive_ptr<TAXON_C10D_BACKEND> make_backend(const c10::intrusive_ptr<::c10d::Store>& store,
                                                             const LaunchEnvironment& env,
                                                             const ProcessGroupOptions& options) {
    if (options.device().is_cuda()) {
#if TAXON_WITH_NCCL
      auto o = ::c10d::ProcessGroupNCCL::Options::create();
      o->timeout = options.timeout();
      return c10::make_intrusive<::c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, o);
#else
      TAXON_FAIL("dist.no-backend", "device ", options.device().str(),
                 " needs NCCL, which this LibTorch build (", compat::torch_version, ") or taxon's build lacks");
#endif
    }
    TAXON_CHECK(options.device().is_cpu(), "dist.no-backend", "device ", options.device().str(),
                " has no process-group backend (CPU -> Gloo, CUDA -> NCCL)");
#if TAXON_WITH_GLOO
    auto o = ::c10d::ProcessGroupGloo::Options::create(options.timeout());
    const std::string& host = env.master_addr;
    if (const char* ifname = detail::env_or_null("GLOO_SOCKET_IFNAME")) {
      o->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (host == "localhost" || host.rfind("127.", 0) == 0) {
      o->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      o->devices.push_back(::c10d::ProcessGroupGloo::createDefaultDevice());
    }
    o->threads = 2;
    return c10::make_intrusive<::c10d::ProcessGroupGloo>(store, env.rank, env.world_size, o);
#else
    TAXON_FAIL("dist.no-backend", "this build of taxon has no Gloo (LibTorch ", compat::torch_version,
               "; configure with the gloo headers installed, Debian: libgloo-dev)");
#endif
  }

  template <typename Launch>
  void run(const char* op, std::int64_t payload_bytes, Launch&& launch) {
    std::string cause;
    const auto start = std::chrono::steady_clock::now();
    try {
      auto work = launch();
      work->wait(state_->options.timeout());
      state_->stats.calls += 1;
      state_->stats.payload_bytes += payload_bytes;
      state_->stats.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return;
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      cause = e.what();
    }
    const auto eol = cause.find('\n');  // c10::Error appends a C++ backtrace
    state_->throw_peer_failure(op, eol == std::string::npos ? cause : cause.substr(0, eol));
  }

  // Gathers every rank's [ndim, dims..., dtype] so a mismatch is an error naming the rank, not a hang or garbage.
  at::Tensor gather_impl(const at::Tensor& t, bool even, std::vector<std::int64_t>* rows_per_rank) {
    if (!state_) {
      if (rows_per_rank != nullptr) *rows_per_rank = {t.dim() > 0 ? t.size(0) : 1};
      return t;
    }
    constexpr std::int64_t max_dims = 8;
    TAXON_CHECK(t.dim() >= 1 && t.dim() <= max_dims, "dist.shape-mismatch", "all_gather needs a tensor of 1 to ",
                max_dims, " dimensions, got ", t.sizes());
    at::Tensor header = at::full({max_dims + 2}, -1, at::kLong);
    header[0] = t.dim();
    for (std::int64_t d = 0; d < t.dim(); ++d) header[d + 1] = t.size(d);
    header[max_dims + 1] = static_cast<std::int64_t>(t.scalar_type());
    const at::Tensor headers =
        gather_bytes(header.to(t.device()), "all_gather").view(at::kLong).view({world_size(), -1}).cpu();
    const auto dims_of = [&](const at::Tensor& h) {
      std::vector<std::int64_t> dims;
      for (std::int64_t d = 0; d < h[0].item<std::int64_t>() && d < max_dims; ++d) {
        dims.push_back(h[d + 1].item<std::int64_t>());
      }
      return dims;
    };
    std::int64_t max_rows = 0;
    std::vector<std::int64_t> rows(world_size());
    for (int r = 0; r < world_size(); ++r) {
      const at::Tensor other = headers[r];
      rows[r] = other[1].item<std::int64_t>();
      max_rows = std::max(max_rows, rows[r]);
      const bool same = even ? other.equal(header) : other.narrow(0, 2, max_dims).equal(header.narrow(0, 2, max_dims)) &&
                                                          other[0].equal(header[0]);
      TAXON_CHECK(same, "dist.shape-mismatch", even ? "all_gather" : "all_gather_uneven", ": rank ", r,
                  " passed shape ", c10::IntArrayRef(dims_of(other)), " of dtype ",
                  static_cast<at::ScalarType>(other[max_dims + 1].item<std::int64_t>()), " but rank ", rank(),
                  " passed ", t.sizes(), " of dtype ", t.scalar_type(),
                  even ? " (all_gather needs equal shapes)" : " (only dim 0 may differ)");
    }
    if (rows_per_rank != nullptr) *rows_per_rank = rows;
    std::vector<std::int64_t> out_shape = t.sizes().vec();
    out_shape[0] = 0;
    for (auto n : rows) out_shape[0] += n;
    std::int64_t row_elements = 1;
    for (std::int64_t d = 1; d < t.dim(); ++d) row_elements *= t.size(d);
    if (max_rows == 0 || row_elements == 0) return at::empty(out_shape, t.options());
    at::Tensor padded = t.contiguous();
    if (t.size(0) < max_rows) {
      std::vector<std::int64_t> pad_shape = t.sizes().vec();
      pad_shape[0] = max_rows - t.size(0);
      padded = at::cat({padded, at::zeros(pad_shape, t.options())});
    }
    std::vector<std::int64_t> block_shape = t.sizes().vec();
    block_shape[0] = max_rows;
    const at::Tensor all = gather_bytes(padded, "all_gather");
    const std::int64_t block_bytes = all.numel() / world_size();
    std::vector<at::Tensor> parts;
    for (int r = 0; r < world_size(); ++r) {
      const at::Tensor block = all.narrow(0, r * block_bytes, block_bytes).view(t.scalar_type()).view(block_shape);
      parts.push_back(block.narrow(0, 0, rows[r]));
    }
    return at::cat(parts);
  }

  // All-gathers raw bytes (any dtype on any backend); returns world_size blocks back to back.
  at::Tensor gather_bytes(const at::Tensor& t, const char* op) {
    std::vector<at::Tensor> input{t.contiguous().reshape({-1}).view(at::kByte)};
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int r = 0; r < world_size(); ++r) outputs[0].push_back(at::empty_like(input[0]));
    ::c10d::AllgatherOptions o;
    o.timeout = state_->options.timeout();
    run(op, input[0].nbytes(), [&] { return state_->backend->allgather(outputs, input, o); });
    return at::cat(outputs[0]);
  }
};

}  // namespace taxon::dist
