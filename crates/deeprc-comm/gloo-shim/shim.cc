// C++ side of the Gloo backend of deeprc-comm: a rendezvous store that calls
// back into Rust, context creation, and thin wrappers over Gloo's
// collectives and unbound buffers. See shim.h and src/gloo/ffi.rs.

#include "deeprc-comm/gloo-shim/shim.h"
#include "deeprc-comm/src/gloo/ffi.rs.h"

#include <chrono>
#include <cstring>
#include <string>
#include <type_traits>

#include <gloo/allgather.h>
#include <gloo/allgatherv.h>
#include <gloo/allreduce.h>
#include <gloo/alltoall.h>
#include <gloo/alltoallv.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/gather.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/hash_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

namespace deeprc_gloo {

namespace {

using ms = std::chrono::milliseconds;

// Slots of this shim: Gloo's own collectives use prefixes 0x01..0x08 in the
// top byte (gloo/types.h), so these never meet them.
constexpr uint64_t kHeaderSlot = uint64_t(0xD0) << 56;
constexpr uint64_t kDataSlot = uint64_t(0xD1) << 56;
constexpr uint64_t kGathervSlot = uint64_t(0xD2) << 56;

// Long enough to mean "until aborted", short enough not to overflow
// steady_clock arithmetic inside condition_variable::wait_for.
constexpr ms kForever = std::chrono::hours(24 * 365);

constexpr size_t kHeaderBytes = 16;

// GLOO_ENFORCE_* only compile inside namespace gloo; this is their stand-in.
void require(bool ok, const char* what) {
  if (!ok) {
    GLOO_THROW_INVALID_OPERATION_EXCEPTION(what);
  }
}

ms millis(uint64_t v) {
  return ms(static_cast<ms::rep>(v == 0 ? 1 : v));
}

void* mut_ptr(rust::Slice<const uint8_t> s) {
  // Gloo takes `void*` for send buffers too; it never writes to them.
  return const_cast<uint8_t*>(s.data());
}

// A store whose keys and values live in a Rust `tcp::Store` (TCP or
// directory), through the bridge's callbacks.
class BridgeStore : public gloo::rendezvous::Store {
 public:
  BridgeStore(rust::Box<StoreBridge> bridge, ms timeout)
      : bridge_(std::move(bridge)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    bridge_->set(
        rust::Str(key),
        rust::Slice<const uint8_t>(
            reinterpret_cast<const uint8_t*>(data.data()), data.size()));
  }

  // Waits for the key: Gloo calls get() without wait() for some keys.
  std::vector<char> get(const std::string& key) override {
    rust::Vec<uint8_t> v = bridge_->get(rust::Str(key), timeout_.count());
    return std::vector<char>(v.begin(), v.end());
  }

  void wait(const std::vector<std::string>& keys) override {
    wait(keys, timeout_);
  }

  void wait(const std::vector<std::string>& keys, const ms& timeout) override {
    for (const auto& key : keys) {
      bridge_->get(rust::Str(key), timeout.count());
    }
  }

 private:
  rust::Box<StoreBridge> bridge_;
  ms timeout_;
};

// Gloo's HashStore, except that get() waits for the key like the other
// stores do (connectFullMesh reads some keys without waiting first).
class WaitingHashStore : public gloo::rendezvous::HashStore {
 public:
  std::vector<char> get(const std::string& key) override {
    HashStore::wait({key}, Store::kDefaultTimeout);
    return HashStore::get(key);
  }
};

// Integer reductions, wrapping like Rust's wrapping_add / wrapping_mul (no
// signed overflow), on possibly unaligned buffers. `c` may alias `a`.
enum : uint8_t { kSum = 0, kMin = 1, kMax = 2, kProd = 3 };

template <typename T, uint8_t Op>
void reduce_int(void* c, const void* a, const void* b, size_t n) {
  using U = typename std::make_unsigned<T>::type;
  using W = typename std::conditional<(sizeof(T) < sizeof(unsigned)),
                                      unsigned, U>::type;
  auto* cp = static_cast<unsigned char*>(c);
  auto* ap = static_cast<const unsigned char*>(a);
  auto* bp = static_cast<const unsigned char*>(b);
  for (size_t i = 0; i < n; i++) {
    T x, y, r;
    std::memcpy(&x, ap + i * sizeof(T), sizeof(T));
    std::memcpy(&y, bp + i * sizeof(T), sizeof(T));
    if (Op == kMin) {
      r = y < x ? y : x;
    } else if (Op == kMax) {
      r = x < y ? y : x;
    } else {
      W wx = static_cast<W>(static_cast<U>(x));
      W wy = static_cast<W>(static_cast<U>(y));
      U ur = static_cast<U>(Op == kSum ? W(wx + wy) : W(wx * wy));
      std::memcpy(&r, &ur, sizeof(T));
    }
    std::memcpy(cp + i * sizeof(T), &r, sizeof(T));
  }
}

template <typename T>
void allreduce_typed(const std::shared_ptr<gloo::Context>& ctx, uint8_t* data,
                     size_t bytes, uint8_t op) {
  gloo::AllreduceOptions opts(ctx);
  opts.setOutput<T>(reinterpret_cast<T*>(data), bytes / sizeof(T));
  switch (op) {
    case kSum:
      opts.setReduceFunction(&reduce_int<T, kSum>);
      break;
    case kMin:
      opts.setReduceFunction(&reduce_int<T, kMin>);
      break;
    case kMax:
      opts.setReduceFunction(&reduce_int<T, kMax>);
      break;
    case kProd:
      opts.setReduceFunction(&reduce_int<T, kProd>);
      break;
    default:
      GLOO_THROW_INVALID_OPERATION_EXCEPTION("unknown reduce op ", int(op));
  }
  opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
  gloo::allreduce(opts);
}

std::vector<size_t> to_sizes(rust::Slice<const uint64_t> v) {
  return std::vector<size_t>(v.begin(), v.end());
}

std::vector<int64_t> to_i64(rust::Slice<const uint64_t> v) {
  std::vector<int64_t> out;
  out.reserve(v.size());
  for (auto x : v) {
    out.push_back(static_cast<int64_t>(x));
  }
  return out;
}

}  // namespace

GStore::GStore(std::shared_ptr<gloo::rendezvous::Store> store)
    : store(std::move(store)) {}

GDevice::GDevice(std::shared_ptr<gloo::transport::Device> dev)
    : dev(std::move(dev)) {}

GCtx::GCtx(std::shared_ptr<gloo::Context> ctx) : ctx_(std::move(ctx)) {
  for (int r = 0; r < ctx_->size; r++) {
    if (r != ctx_->rank) {
      peers_.push_back(r);
    }
  }
  if (!peers_.empty()) {
    hdr_mem_.reset(new char[kHeaderBytes]);
    hdr_ = ctx_->createUnboundBuffer(hdr_mem_.get(), kHeaderBytes);
  }
}

// Members go in reverse order: the header buffer (which waits for the
// device thread to let go of it) before its memory, the context last.
GCtx::~GCtx() = default;

void GCtx::barrier() const {
  gloo::BarrierOptions opts(ctx_);
  gloo::barrier(opts);
}

void GCtx::broadcast_root(int32_t root, rust::Slice<const uint8_t> data) const {
  // In place: the root only sends from its buffer.
  gloo::BroadcastOptions opts(ctx_);
  opts.setOutput(static_cast<uint8_t*>(mut_ptr(data)), data.size());
  opts.setRoot(root);
  gloo::broadcast(opts);
}

void GCtx::broadcast_recv(int32_t root, rust::Slice<uint8_t> out) const {
  gloo::BroadcastOptions opts(ctx_);
  opts.setOutput(out.data(), out.size());
  opts.setRoot(root);
  gloo::broadcast(opts);
}

void GCtx::allgather(rust::Slice<const uint8_t> in,
                     rust::Slice<uint8_t> out) const {
  gloo::AllgatherOptions opts(ctx_);
  opts.setInput(static_cast<uint8_t*>(mut_ptr(in)), in.size());
  opts.setOutput(out.data(), out.size());
  gloo::allgather(opts);
}

void GCtx::gather(int32_t root, rust::Slice<const uint8_t> in,
                  rust::Slice<uint8_t> out) const {
  gloo::GatherOptions opts(ctx_);
  opts.setInput(static_cast<uint8_t*>(mut_ptr(in)), in.size());
  if (ctx_->rank == root) {
    opts.setOutput(out.data(), out.size());
  }
  opts.setRoot(root);
  gloo::gather(opts);
}

// gloo::gather with a byte count per rank (this Gloo has no gatherv): the
// root posts one receive per peer at its offset, the others send.
void GCtx::gatherv(int32_t root, rust::Slice<const uint8_t> in,
                   rust::Slice<uint8_t> out,
                   rust::Slice<const uint64_t> counts) const {
  const auto timeout = ctx_->getTimeout();
  auto inbuf = ctx_->createUnboundBuffer(mut_ptr(in), in.size());
  if (ctx_->rank != root) {
    inbuf->send(root, kGathervSlot);
    inbuf->waitSend(timeout);
    return;
  }
  require(counts.size() == size_t(ctx_->size), "gatherv: one count per rank");
  require(counts[root] == in.size(), "gatherv: the root's count");
  auto outbuf = ctx_->createUnboundBuffer(out.data(), out.size());
  size_t offset = 0;
  size_t own = 0;
  for (int i = 0; i < ctx_->size; i++) {
    if (i == root) {
      own = offset;
    } else {
      outbuf->recv(i, kGathervSlot, offset, counts[i]);
    }
    offset += counts[i];
  }
  require(offset == out.size(), "gatherv: output size");
  if (in.size() > 0) {
    std::memcpy(out.data() + own, in.data(), in.size());
  }
  for (int i = 1; i < ctx_->size; i++) {
    outbuf->waitRecv(timeout);
  }
}

void GCtx::alltoall(rust::Slice<const uint8_t> in,
                    rust::Slice<uint8_t> out) const {
  gloo::AlltoallOptions opts(ctx_);
  opts.setInput(static_cast<uint8_t*>(mut_ptr(in)), in.size());
  opts.setOutput(out.data(), out.size());
  gloo::alltoall(opts);
}

void GCtx::allgatherv(rust::Slice<const uint8_t> in, rust::Slice<uint8_t> out,
                      rust::Slice<const uint64_t> counts) const {
  gloo::AllgathervOptions opts(ctx_);
  opts.setInput(static_cast<uint8_t*>(mut_ptr(in)), in.size());
  opts.setOutput(out.data(), to_sizes(counts));
  gloo::allgatherv(opts);
}

void GCtx::alltoallv(rust::Slice<const uint8_t> in,
                     rust::Slice<const uint64_t> in_counts,
                     rust::Slice<uint8_t> out,
                     rust::Slice<const uint64_t> out_counts) const {
  gloo::AlltoallvOptions opts(ctx_);
  opts.setInput(static_cast<uint8_t*>(mut_ptr(in)), to_i64(in_counts));
  opts.setOutput(out.data(), to_i64(out_counts));
  gloo::alltoallv(opts);
}

void GCtx::allreduce_int(rust::Slice<uint8_t> data, uint8_t dtype,
                         uint8_t op) const {
  // Codes of deeprc_comm::DType, integers only.
  switch (dtype) {
    case 0:
      return allreduce_typed<uint8_t>(ctx_, data.data(), data.size(), op);
    case 1:
      return allreduce_typed<int8_t>(ctx_, data.data(), data.size(), op);
    case 2:
      return allreduce_typed<uint16_t>(ctx_, data.data(), data.size(), op);
    case 3:
      return allreduce_typed<int16_t>(ctx_, data.data(), data.size(), op);
    case 4:
      return allreduce_typed<uint32_t>(ctx_, data.data(), data.size(), op);
    case 5:
      return allreduce_typed<int32_t>(ctx_, data.data(), data.size(), op);
    case 6:
      return allreduce_typed<uint64_t>(ctx_, data.data(), data.size(), op);
    case 7:
      return allreduce_typed<int64_t>(ctx_, data.data(), data.size(), op);
    default:
      GLOO_THROW_INVALID_OPERATION_EXCEPTION("unknown integer dtype ",
                                             int(dtype));
  }
}

void GCtx::p2p_send(int32_t dst, rust::Slice<const uint8_t> header,
                    rust::Slice<const uint8_t> data,
                    uint64_t timeout_ms) const {
  require(header.size() == kHeaderBytes, "p2p_send: header size");
  auto hbuf = ctx_->createUnboundBuffer(mut_ptr(header), header.size());
  std::unique_ptr<gloo::transport::UnboundBuffer> dbuf;
  hbuf->send(dst, kHeaderSlot);
  if (data.size() > 0) {
    dbuf = ctx_->createUnboundBuffer(mut_ptr(data), data.size());
    dbuf->send(dst, kDataSlot);
  }
  hbuf->waitSend(millis(timeout_ms));
  if (dbuf) {
    dbuf->waitSend(millis(timeout_ms));
  }
}

Header GCtx::p2p_wait_header() const {
  Header h{};
  h.aborted = true;
  {
    std::lock_guard<std::mutex> guard(m_);
    if (aborted_ || !hdr_) {
      return h;
    }
  }
  hdr_->recv(peers_, kHeaderSlot, 0, kHeaderBytes);
  int src = -1;
  if (!hdr_->waitRecv(&src, kForever)) {
    return h;
  }
  h.aborted = false;
  h.src = src;
  std::memcpy(&h.tag, hdr_mem_.get(), 8);
  std::memcpy(&h.len, hdr_mem_.get() + 8, 8);
  return h;
}

bool GCtx::p2p_recv_data(int32_t src, rust::Slice<uint8_t> out,
                         uint64_t timeout_ms) const {
  auto buf = ctx_->createUnboundBuffer(out.data(), out.size());
  {
    std::lock_guard<std::mutex> guard(m_);
    if (aborted_) {
      return false;
    }
    cur_data_ = buf.get();
  }
  bool done = false;
  try {
    buf->recv(src, kDataSlot);
    done = buf->waitRecv(millis(timeout_ms));
  } catch (...) {
    std::lock_guard<std::mutex> guard(m_);
    cur_data_ = nullptr;
    throw;
  }
  std::lock_guard<std::mutex> guard(m_);
  cur_data_ = nullptr;
  return done;
}

void GCtx::p2p_abort() const {
  std::lock_guard<std::mutex> guard(m_);
  aborted_ = true;
  if (hdr_) {
    hdr_->abortWaitRecv();
  }
  if (cur_data_ != nullptr) {
    cur_data_->abortWaitRecv();
  }
}

std::unique_ptr<GStore> bridge_store(rust::Box<StoreBridge> bridge,
                                     uint64_t timeout_ms) {
  return std::unique_ptr<GStore>(new GStore(
      std::make_shared<BridgeStore>(std::move(bridge), millis(timeout_ms))));
}

std::unique_ptr<GStore> hash_store() {
  return std::unique_ptr<GStore>(
      new GStore(std::make_shared<WaitingHashStore>()));
}

std::unique_ptr<GDevice> tcp_device(rust::Str hostname) {
  gloo::transport::tcp::attr attr;
  attr.hostname = std::string(hostname);
  return std::unique_ptr<GDevice>(
      new GDevice(gloo::transport::tcp::CreateDevice(attr)));
}

std::unique_ptr<GCtx> connect(const GStore& store, rust::Str prefix,
                              const GDevice& device, int32_t rank, int32_t size,
                              uint64_t connect_timeout_ms,
                              uint64_t timeout_ms) {
  gloo::rendezvous::PrefixStore scoped(std::string(prefix), *store.store);
  auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
  ctx->setTimeout(millis(connect_timeout_ms));
  auto dev = device.dev;
  ctx->connectFullMesh(scoped, dev);
  ctx->setTimeout(millis(timeout_ms));
  return std::unique_ptr<GCtx>(new GCtx(ctx));
}

}  // namespace deeprc_gloo
