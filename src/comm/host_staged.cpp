// Device buffers over a host transport, staged through page-locked host memory; see
// loco/comm/host_staged.hpp.
#include "loco/comm/host_staged.hpp"

#include <cstring>
#include <utility>

namespace loco {

namespace {

class HostStagedCommunicator final : public Communicator {
 public:
  HostStagedCommunicator(std::unique_ptr<Communicator> host, Backend& backend)
      : Communicator(host ? host->timeout_s() : 0.0), host_(std::move(host)), backend_(backend) {
    if (!host_ || !host_->accepts(MemSpace::Host))
      throw Error("host-staged communicator: the wrapped communicator must take host memory");
  }
  ~HostStagedCommunicator() override { backend_.release_host(cache_); }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string name() const override { return host_->name() + " (device buffers staged via host)"; }
  bool accepts(MemSpace) const override { return true; }

  void barrier() override {
    forward([&] { host_->barrier(); });
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    std::unique_ptr<Communicator> child;
    forward([&] { child = host_->split(color, key); });
    if (!child) return nullptr;
    return std::make_unique<HostStagedCommunicator>(std::move(child), backend_);
  }
  void all_reduce_host(std::vector<double>& values, ReduceOp op) override {
    forward([&] { host_->all_reduce_host(values, op); });
  }
  void all_reduce_host(std::vector<uint64_t>& values, ReduceOp op) override {
    forward([&] { host_->all_reduce_host(values, op); });
  }
  using Communicator::all_gather_host;
  using Communicator::all_reduce_host;
  std::vector<uint64_t> all_gather_host(const std::vector<uint64_t>& values) override {
    std::vector<uint64_t> out;
    forward([&] { out = host_->all_gather_host(values); });
    return out;
  }
  void broadcast_host(void* data, size_t bytes, int root) override {
    forward([&] { host_->broadcast_host(data, bytes, root); });
  }

 protected:
  void do_all_reduce(Buf buf, ReduceOp op) override {
    if (buf.on_host()) return forward([&] { host_->all_reduce(buf, op); });
    set_timeout();
    const Buf staged = stage(buf);
    forward([&] { host_->all_reduce(staged, op); });
    backend_.upload(buf, staged.data);
  }

  void do_all_gather(Buf send, Buf recv) override {
    if (send.on_host() && recv.on_host()) return forward([&] { host_->all_gather(send, recv); });
    set_timeout();
    // One staging block: the received pieces, with this rank's piece in its own slot.
    Buf all = cached(recv.numel, recv.dtype);
    Buf mine = all.slice(size_t(rank()) * send.numel, send.numel);
    copy_in(mine, send);
    forward([&] { host_->all_gather(mine, all); });
    copy_out(recv, all);
  }

  void do_broadcast(Buf buf, int root) override {
    if (buf.on_host()) return forward([&] { host_->broadcast(buf, root); });
    set_timeout();
    const Buf staged = stage(buf);
    forward([&] { host_->broadcast(staged, root); });
    backend_.upload(buf, staged.data);
  }

  std::unique_ptr<CommRequest> do_start_all_reduce(Buf buf, ReduceOp op) override {
    set_timeout();
    if (buf.on_host())
      return wrap(nullptr, Buf{}, [&] { return host_->start_all_reduce(buf, op); });
    Buf staged = backend_.alloc_host(buf.numel, buf.dtype);
    backend_.download(staged.data, buf);
    return wrap(&buf, staged, [&] { return host_->start_all_reduce(staged, op); });
  }

  std::unique_ptr<CommRequest> do_start_all_gather(Buf send, Buf recv) override {
    set_timeout();
    if (send.on_host() && recv.on_host())
      return wrap(nullptr, Buf{}, [&] { return host_->start_all_gather(send, recv); });
    Buf all = backend_.alloc_host(recv.numel, recv.dtype);
    Buf mine = all.slice(size_t(rank()) * send.numel, send.numel);
    copy_in(mine, send);
    return wrap(
        recv.on_host() ? nullptr : &recv, all, [&] { return host_->start_all_gather(mine, all); },
        recv.on_host() ? recv : Buf{});
  }

 private:
  // A started collective on staging memory: the upload (and the accounting) at completion.
  class Request final : public CommRequest {
   public:
    Request(HostStagedCommunicator& comm, std::unique_ptr<CommRequest> inner, Buf device_dst,
            Buf host_dst, Buf staging)
        : comm_(comm),
          inner_(std::move(inner)),
          device_dst_(device_dst),
          host_dst_(host_dst),
          staging_(staging) {}
    ~Request() override { comm_.backend_.release_host(staging_); }

    bool test() override {
      if (done_) return true;
      bool finished = false;
      comm_.forward([&] { finished = inner_->test(); });
      if (finished) complete();
      return done_;
    }
    void wait() override {
      if (done_) return;
      comm_.forward([&] { inner_->wait(); });
      complete();
    }
    bool done() const override { return done_; }

   private:
    void complete() {
      if (device_dst_.data) comm_.backend_.upload(device_dst_, staging_.data);
      if (host_dst_.data) std::memcpy(host_dst_.data, staging_.data, host_dst_.bytes());
      done_ = true;
    }

    HostStagedCommunicator& comm_;
    std::unique_ptr<CommRequest> inner_;
    Buf device_dst_, host_dst_, staging_;
    bool done_ = false;
  };

  template <typename Start>
  std::unique_ptr<CommRequest> wrap(const Buf* device_dst, Buf staging, Start start,
                                    Buf host_dst = Buf{}) {
    std::unique_ptr<CommRequest> inner;
    try {
      forward([&] { inner = start(); });
    } catch (...) {
      backend_.release_host(staging);
      throw;
    }
    return std::make_unique<Request>(*this, std::move(inner), device_dst ? *device_dst : Buf{},
                                     host_dst, staging);
  }

  // Runs a call on the wrapped communicator and adds what it accounted to ours.
  template <typename F>
  void forward(F&& f) {
    host_->set_timeout_s(timeout_s_);
    const CommStats before = host_->stats();
    f();
    stats_ += host_->stats() - before;
  }
  void set_timeout() { host_->set_timeout_s(timeout_s_); }

  // The reusable staging block of the blocking calls, grown as needed.
  Buf cached(size_t numel, DType dtype) {
    const size_t bytes = numel * dtype_size(dtype);
    if (cache_.bytes() < bytes) {
      backend_.release_host(cache_);
      cache_ = backend_.alloc_host((bytes + 3) / 4, DType::I32);
    }
    return Buf{cache_.data, dtype, numel, MemSpace::Host};
  }
  Buf stage(Buf device) {
    Buf staged = cached(device.numel, device.dtype);
    backend_.download(staged.data, device);
    return staged;
  }
  void copy_in(Buf host_dst, Buf src) {
    if (src.on_host())
      std::memcpy(host_dst.data, src.data, src.bytes());
    else
      backend_.download(host_dst.data, src);
  }
  void copy_out(Buf dst, Buf host_src) {
    if (dst.on_host())
      std::memcpy(dst.data, host_src.data, dst.bytes());
    else
      backend_.upload(dst, host_src.data);
  }

  std::unique_ptr<Communicator> host_;
  Backend& backend_;
  Buf cache_;
};

}  // namespace

std::unique_ptr<Communicator> make_host_staged_communicator(std::unique_ptr<Communicator> host,
                                                            Backend& backend) {
  return std::make_unique<HostStagedCommunicator>(std::move(host), backend);
}

}  // namespace loco
