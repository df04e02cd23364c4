#pragma once
// Multi-threaded batch loader. Each worker builds whole batches (read, decode, transform, collate into the
// batch tensor), so throughput scales with workers and there is no per-sample hand-off. Batches are handed out
// in order through a bounded reorder window; every sample's randomness comes from derive_seed(seed, {epoch,
// index}) and the order from derive_seed(seed, {epoch}), so batches are identical for any number of workers.
//
//   Loader loader(dataset, clip_train(224), LoaderOptions().batch_size(64).workers(4).seed(1));
//   for (auto& batch : loader.epoch(e)) { ... batch.images [B,3,224,224], batch.labels [B,R] ... }
//
// Image -> batch, per sample: `dataset.get(i)`, the transform, a copy into the sample's slot of the batch. Two
// shortcuts, both bit-identical: when the transform starts with resize_center_crop (clip_eval, timm_eval) and the
// dataset accepts a DecodeRequest (image datasets do), the Loader calls `dataset.get(i, request)` and the dataset
// decodes straight to the crop; and the transform's last step writes into the slot itself (apply_into).
// For GPU training, end the transform with to_chw() instead of normalize() to collate uint8 [B,3,H,W] and call
// normalize_batch() on the device batch (same values, a quarter of the bytes through pinned memory and PCIe).
//
// Leaving the loop early (break, exception) stops and joins the workers. An exception inside a worker is
// re-thrown in the caller, unchanged, when the batch it belongs to is reached.
#include "taxon/core/error.hpp"
#include "taxon/core/log.hpp"
#include "taxon/core/options.hpp"
#include "taxon/core/seed.hpp"
#include "taxon/data/dataset.hpp"
#include "taxon/data/decode_request.hpp"
#include "taxon/data/random.hpp"
#include "taxon/data/transforms.hpp"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace taxon::data {

// What a sample-level failure does: propagate (reject) or drop the sample from its batch and count it (skip).
// Only unreadable/corrupt/missing files are skippable ("data.corrupt-image", "io.missing-file", "io.cannot-read").
enum class ErrorPolicy { reject, skip };

class LoaderOptions {
  TAXON_ARG(std::int64_t, batch_size) = 32;
  TAXON_ARG(int, workers) = 2;              // 0: load in the calling thread
  TAXON_ARG(int, prefetch) = 2;             // batches in flight per worker
  TAXON_ARG(bool, shuffle) = true;
  TAXON_ARG(bool, drop_last) = false;
  TAXON_ARG(std::uint64_t, seed) = 0;
  TAXON_ARG(int, rank) = 0;                 // shard of a distributed run
  TAXON_ARG(int, world_size) = 1;
  // Equal shard sizes across ranks (DistributedSampler): pad by wrapping around, or truncate with drop_last.
  TAXON_ARG(bool, even_shards) = true;
  TAXON_ARG(bool, pin_memory) = false;      // honoured only when CUDA is available
  TAXON_ARG(ErrorPolicy, on_error) = ErrorPolicy::reject;
  // When the transform starts with resize_center_crop (clip_eval, timm_eval), datasets that accept a DecodeRequest
  // are asked for the crop instead of the image: image datasets decode only the JPEG columns it reads,
  // bit-identical to decoding in full. false always calls get(i) and runs the whole transform.
  TAXON_ARG(bool, fused_decode) = true;
};

// Sample order of one epoch for one shard: a seeded permutation (or identity), split across ranks by striding.
inline std::vector<std::int64_t> epoch_order(std::int64_t n, std::int64_t epoch, const LoaderOptions& o) {
  TAXON_CHECK(o.world_size() >= 1 && o.rank() >= 0 && o.rank() < o.world_size(), "data.bad-shard", "rank ", o.rank(),
              " outside world size ", o.world_size());
  std::vector<std::int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  if (o.shuffle()) {
    Rng rng = make_engine(o.seed(), {0x5348554646ULL /* "SHUFF" */, static_cast<std::uint64_t>(epoch)});
    for (std::int64_t i = n - 1; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(uniform_int(rng, 0, i + 1))]);
  }
  const std::int64_t ws = o.world_size();
  if (ws == 1) return order;
  if (o.even_shards() && n > 0) {
    if (o.drop_last()) order.resize(static_cast<size_t>(n / ws * ws));
    else
      for (std::int64_t i = 0; static_cast<std::int64_t>(order.size()) % ws != 0; ++i) order.push_back(order[static_cast<size_t>(i % n)]);
  }
  std::vector<std::int64_t> shard;
  for (size_t i = static_cast<size_t>(o.rank()); i < order.size(); i += static_cast<size_t>(ws)) shard.push_back(order[i]);
  return shard;
}

inline bool skippable(const Error& e) {
  return e.id() == "data.corrupt-image" || e.id() == "io.missing-file" || e.id() == "io.cannot-read";
}

// Worker threads that outlive an epoch (PyTorch's persistent_workers): thread start-up and each thread's warm
// buffers (decode scratch, resampling rows, malloc arena) are paid once per Loader, not once per epoch.
class WorkerPool {
 public:
  explicit WorkerPool(int threads) : size_(threads) {}
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    start_cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs `job` once on every pool thread; false (nothing started) while an earlier job is still running.
  bool try_start(std::function<void()> job) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pending_ > 0) return false;
    if (threads_.empty())
      for (int i = 0; i < size_; ++i) threads_.emplace_back([this] { loop(); });
    job_ = std::move(job);
    pending_ = size_;
    ++generation_;
    start_cv_.notify_all();
    return true;
  }
  // Blocks until every thread has finished the current job.
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop() {
    std::uint64_t seen = 0;
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        start_cv_.wait(lock, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
        job = job_;
      }
      job();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        --pending_;
      }
      done_cv_.notify_all();
    }
  }

  const int size_;
  std::mutex mutex_;
  std::condition_variable start_cv_, done_cv_;
  std::function<void()> job_;
  std::uint64_t generation_ = 0;
  int pending_ = 0;
  bool quit_ = false;
  std::vector<std::thread> threads_;
};

template <Dataset D>
class Loader {
 public:
  Loader(std::shared_ptr<const D> dataset, TransformFn transform, LoaderOptions options = {})
      : state_(std::make_shared<Shared>(std::move(dataset), std::move(transform), std::move(options))) {
    TAXON_CHECK(state_->options.batch_size() > 0, "data.bad-option", "batch_size must be positive, got ",
                state_->options.batch_size());
    TAXON_CHECK(state_->options.workers() >= 0 && state_->options.prefetch() >= 1, "data.bad-option",
                "workers must be >= 0 and prefetch >= 1");
    state_->pin = state_->options.pin_memory() && at::hasCUDA();
  }
  Loader(D dataset, TransformFn transform, LoaderOptions options = {})
      : Loader(std::make_shared<const D>(std::move(dataset)), std::move(transform), std::move(options)) {}

  const LoaderOptions& options() const { return state_->options; }
  const D& dataset() const { return *state_->dataset; }
  std::vector<std::int64_t> order(std::int64_t epoch) const { return epoch_order(state_->dataset->size(), epoch, state_->options); }
  std::int64_t batches_per_epoch() const {
    const auto n = static_cast<std::int64_t>(order(0).size());
    const auto b = state_->options.batch_size();
    return state_->options.drop_last() ? n / b : (n + b - 1) / b;
  }
  // Samples dropped under ErrorPolicy::skip so far, and the first few messages.
  std::int64_t skipped() const { return state_->skipped.load(); }
  std::vector<std::string> skipped_examples() const {
    std::lock_guard<std::mutex> lock(state_->skip_mutex);
    return state_->skip_examples;
  }
  // Dataset indices of the samples skipped so far (each once, sorted) and each one's message, so a caller can leave
  // them out of everything that must line up with the batches (labels, evaluation columns).
  std::vector<std::pair<std::int64_t, std::string>> skipped_samples() const {
    std::lock_guard<std::mutex> lock(state_->skip_mutex);
    return {state_->skipped_samples.begin(), state_->skipped_samples.end()};
  }

  class Epoch;
  // The batches of one epoch; workers start here and stop when the range is destroyed. `skip` leaves out the
  // first batches without reading or decoding them (resuming mid-epoch); the rest are the same batches.
  Epoch epoch(std::int64_t e, std::int64_t skip = 0) const { return Epoch(state_, e, skip); }

 private:
  struct Shared {
    std::shared_ptr<const D> dataset;
    TransformFn transform;
    LoaderOptions options;
    bool pin = false;
    std::atomic<std::int64_t> skipped{0};
    mutable std::mutex skip_mutex;
    std::vector<std::string> skip_examples;
    std::map<std::int64_t, std::string> skipped_samples;

    // The transform's leading resize_center_crop as a request to the dataset, and the steps after it; no request
    // when the dataset does not accept one, the transform does not start with the crop, or fused_decode is off.
    std::optional<DecodeRequest> request;
    TransformFn after_request;

    Shared(std::shared_ptr<const D> d, TransformFn t, LoaderOptions o)
        : dataset(std::move(d)), transform(std::move(t)), options(std::move(o)), pool_threads(options.workers()) {
      if constexpr (AcceptsDecodeRequest<D>) {
        if (options.fused_decode()) {
          LeadingCrop leading = split_leading_crop(transform);
          if (leading.crop) {
            request = DecodeRequest{*leading.crop};
            after_request = std::move(leading.rest);
          }
        }
      }
    }

    // The sample and the part of the transform still to apply to it: all of it, or what follows the crop that the
    // dataset did while decoding.
    std::pair<Sample, const TransformFn*> load(std::int64_t idx) const {
      if constexpr (AcceptsDecodeRequest<D>) {
        if (request) return {dataset->get(idx, *request), &after_request};
      }
      return {dataset->get(idx), &transform};
    }

    // Builds batch `b` of `order`: everything a worker does. Each image goes into the batch buffer right after
    // its transform, while it is still in cache (a copy at the end would read a whole batch back from memory).
    Batch build(const std::vector<std::int64_t>& order, std::int64_t epoch, std::int64_t b) {
      const std::int64_t bs = options.batch_size();
      const std::int64_t begin = b * bs, end = std::min<std::int64_t>(begin + bs, static_cast<std::int64_t>(order.size()));
      const std::int64_t ranks = dataset->taxonomy().num_ranks();
      const auto opts = at::TensorOptions().pinned_memory(pin);
      std::vector<std::int64_t> indices, labels;
      at::Tensor buffer, first;  // batch images; the first sample's output fixes the shape
      for (std::int64_t k = begin; k < end; ++k) {
        const std::int64_t idx = order[static_cast<size_t>(k)];
        try {
          auto [s, todo] = load(idx);
          Rng rng = make_engine(options.seed(), {static_cast<std::uint64_t>(epoch), static_cast<std::uint64_t>(idx)});
          const auto slot = static_cast<std::int64_t>(indices.size());
          // The last step writes straight into the sample's slot of the batch when it can (not for the first sample:
          // its output fixes the batch's shape).
          const at::Tensor target = buffer.defined() ? buffer[slot] : at::Tensor();
          const at::Tensor img = (*todo ? apply_into(*todo, s.image, rng, target) : s.image).contiguous();
          TAXON_CHECK(static_cast<std::int64_t>(s.labels.size()) == ranks, "data.bad-sample", "sample ", idx, " carries ",
                      s.labels.size(), " labels for ", ranks, " ranks");
          if (!buffer.defined()) {
            std::vector<std::int64_t> shape{end - begin};
            for (auto d : img.sizes()) shape.push_back(d);
            buffer = acquire(shape, opts.dtype(img.scalar_type()));
            first = img;
            indices.reserve(static_cast<size_t>(end - begin));
          }
          TAXON_CHECK(img.sizes() == first.sizes() && img.scalar_type() == first.scalar_type(), "data.ragged-batch",
                      "sample ", idx, " transforms to ", img.sizes(), " ", img.scalar_type(), " but sample ", indices[0],
                      " to ", first.sizes(), " ", first.scalar_type(),
                      ": add a resize/crop so every sample has the same shape");
          // Plain memmove: an ATen copy_ here would open an OpenMP region per sample from every worker thread.
          char* dst = static_cast<char*>(buffer.data_ptr()) + slot * img.nbytes();
          if (img.data_ptr() != dst) std::memmove(dst, img.data_ptr(), img.nbytes());
          labels.insert(labels.end(), s.labels.begin(), s.labels.end());
          indices.push_back(idx);
        } catch (const Error& e) {
          if (options.on_error() != ErrorPolicy::skip || !skippable(e)) throw;
          skipped.fetch_add(1);
          std::lock_guard<std::mutex> lock(skip_mutex);
          if (skip_examples.size() < 5) skip_examples.push_back(e.what());
          skipped_samples.emplace(idx, e.what());
          log::warn("skipping sample ", idx, ": ", e.what());
        }
      }
      const auto n = static_cast<std::int64_t>(indices.size());
      Batch batch;
      batch.indices = at::empty({n}, opts.dtype(at::kLong));
      batch.labels = at::empty({n, ranks}, opts.dtype(at::kLong));
      std::copy(indices.begin(), indices.end(), batch.indices.data_ptr<std::int64_t>());
      std::copy(labels.begin(), labels.end(), batch.labels.data_ptr<std::int64_t>());
      if (n == 0) batch.images = at::empty({0}, opts.dtype(at::kFloat));
      else batch.images = n == buffer.size(0) ? buffer : buffer.narrow(0, 0, n);  // skipped samples shorten it
      return batch;
    }

    // Batch image buffers are recycled once the caller has dropped every reference to one (storage use
    // and no view = only this pool): a fresh 19 MB batch costs ~5000 first-touch page faults on these VMs.
    std::mutex pool_mutex;
    std::vector<at::Tensor> pool;
    at::Tensor acquire(const std::vector<std::int64_t>& shape, const at::TensorOptions& opts) {
      std::lock_guard<std::mutex> lock(pool_mutex);
      for (auto& t : pool)
        if (t.use_count() == 1 && t.storage().use_count() == 1 && t.sizes() == at::IntArrayRef(shape) && t.dtype() == opts.dtype() &&
            t.is_pinned() == opts.pinned_memory())
          return t;
      at::Tensor t = at::empty(shape, opts);
      const auto cap = static_cast<size_t>(2 * std::max(1, options.workers()) * options.prefetch() + 2);
      if (pool.size() < cap) pool.push_back(t);
      else
        for (auto& slot : pool)
          if (slot.use_count() == 1 && slot.storage().use_count() == 1) {
            slot = t;  // replace an idle buffer of another shape (e.g. the last, smaller batch)
            break;
          }
      return t;
    }

    WorkerPool pool_threads;  // last member: its threads are joined before anything they use is destroyed
  };

 public:
  class Epoch {
   public:
    Epoch(std::shared_ptr<Shared> state, std::int64_t epoch, std::int64_t skip = 0)
        : state_(std::move(state)), epoch_(epoch) {
      TAXON_CHECK(skip >= 0, "data.bad-option", "cannot skip ", skip, " batches");
      order_ = epoch_order(state_->dataset->size(), epoch_, state_->options);
      const auto n = static_cast<std::int64_t>(order_.size());
      const auto bs = state_->options.batch_size();
      num_batches_ = state_->options.drop_last() ? n / bs : (n + bs - 1) / bs;
      first_ = claimed_ = consumed_ = std::min(skip, num_batches_);
      window_ = static_cast<std::int64_t>(state_->options.workers()) * state_->options.prefetch();
      // The Loader's persistent workers, unless another epoch of this Loader is still using them.
      if (state_->options.workers() > 0) pooled_ = state_->pool_threads.try_start([this] { work(); });
      if (!pooled_)
        for (int w = 0; w < state_->options.workers(); ++w) threads_.emplace_back([this] { work(); });
    }
    Epoch(const Epoch&) = delete;
    Epoch& operator=(const Epoch&) = delete;
    ~Epoch() { stop(); }

    std::int64_t size() const { return num_batches_ - first_; }

    // The next batch in order, or nullopt at the end of the epoch.
    std::optional<Batch> next() {
      if (consumed_ >= num_batches_) return std::nullopt;
      if (threads_.empty() && !pooled_) return state_->build(order_, epoch_, consumed_++);
      std::unique_lock<std::mutex> lock(mutex_);
      ready_cv_.wait(lock, [&] { return results_.count(consumed_) > 0; });
      auto node = results_.extract(consumed_);
      ++consumed_;
      lock.unlock();
      space_cv_.notify_all();
      if (node.mapped().error) {
        stop();
        std::rethrow_exception(node.mapped().error);
      }
      return std::move(node.mapped().batch);
    }

    // Joins the workers (idempotent); pending batches are dropped.
    void stop() {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
      }
      space_cv_.notify_all();
      for (auto& t : threads_)
        if (t.joinable()) t.join();
      if (pooled_) {
        state_->pool_threads.wait();
        pooled_ = false;
      }
    }

    class iterator {
     public:
      using value_type = Batch;
      using difference_type = std::ptrdiff_t;
      iterator() = default;
      explicit iterator(Epoch* e) : epoch_(e) { advance(); }
      Batch& operator*() { return *current_; }
      Batch* operator->() { return &*current_; }
      iterator& operator++() {
        advance();
        return *this;
      }
      void operator++(int) { advance(); }
      bool operator==(const iterator& o) const { return done() == o.done(); }
      bool operator!=(const iterator& o) const { return !(*this == o); }

     private:
      bool done() const { return !current_.has_value(); }
      void advance() {
        current_.reset();
        current_ = epoch_->next();
      }
      Epoch* epoch_ = nullptr;
      std::optional<Batch> current_;
    };
    iterator begin() { return iterator(this); }
    iterator end() { return iterator(); }

   private:
    struct Result {
      Batch batch;
      std::exception_ptr error;
    };

    void work() {
      for (;;) {
        std::int64_t b;
        {
          std::unique_lock<std::mutex> lock(mutex_);
          space_cv_.wait(lock, [&] { return stopping_ || claimed_ >= num_batches_ || claimed_ < consumed_ + window_; });
          if (stopping_ || claimed_ >= num_batches_) return;
          b = claimed_++;
        }
        Result r;
        try {
          r.batch = state_->build(order_, epoch_, b);
        } catch (...) {
          r.error = std::current_exception();
        }
        {
          std::lock_guard<std::mutex> lock(mutex_);
          results_.emplace(b, std::move(r));
        }
        ready_cv_.notify_all();
      }
    }

    std::shared_ptr<Shared> state_;
    std::int64_t epoch_;
    std::vector<std::int64_t> order_;
    std::int64_t num_batches_ = 0, window_ = 1, first_ = 0;
    std::mutex mutex_;
    std::condition_variable ready_cv_, space_cv_;
    std::map<std::int64_t, Result> results_;
    std::int64_t claimed_ = 0, consumed_ = 0;  // consumed_ is written only by the consumer, under mutex_ when threaded
    bool stopping_ = false;
    std::vector<std::thread> threads_;
    bool pooled_ = false;  // work() runs on the Loader's WorkerPool
  };

 private:
  std::shared_ptr<Shared> state_;
};

}  // namespace taxon::data
