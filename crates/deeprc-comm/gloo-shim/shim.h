// C++ side of the Gloo backend of deeprc-comm (see src/gloo/ffi.rs).
//
// Every function that can throw is declared `-> Result<..>` in the cxx
// bridge, so Gloo's exceptions (gloo::Exception, gloo::EnforceNotMet, the
// rust::Error thrown by store callbacks) arrive in Rust as `Err`.

#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "rust/cxx.h"

#include <gloo/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/device.h>
#include <gloo/transport/unbound_buffer.h>

namespace deeprc_gloo {

// Defined by the bridge.
struct StoreBridge;
struct Header;

// A rendezvous store: the bridge to a Rust `tcp::Store`, or Gloo's HashStore.
class GStore {
 public:
  explicit GStore(std::shared_ptr<gloo::rendezvous::Store> store);
  std::shared_ptr<gloo::rendezvous::Store> store;
};

// A TCP transport device (one epoll loop thread), shared by a rank's
// communicator and its splits.
class GDevice {
 public:
  explicit GDevice(std::shared_ptr<gloo::transport::Device> dev);
  std::shared_ptr<gloo::transport::Device> dev;
};

// One connected Gloo context plus the state of its point-to-point receiver.
class GCtx {
 public:
  explicit GCtx(std::shared_ptr<gloo::Context> ctx);
  ~GCtx();
  GCtx(const GCtx&) = delete;
  GCtx& operator=(const GCtx&) = delete;

  // Collectives (callers serialize them).
  void barrier() const;
  void broadcast_root(int32_t root, rust::Slice<const uint8_t> data) const;
  void broadcast_recv(int32_t root, rust::Slice<uint8_t> out) const;
  void allgather(rust::Slice<const uint8_t> in, rust::Slice<uint8_t> out) const;
  void gather(int32_t root, rust::Slice<const uint8_t> in,
              rust::Slice<uint8_t> out) const;
  void gatherv(int32_t root, rust::Slice<const uint8_t> in,
               rust::Slice<uint8_t> out, rust::Slice<const uint64_t> counts) const;
  void alltoall(rust::Slice<const uint8_t> in, rust::Slice<uint8_t> out) const;
  void allgatherv(rust::Slice<const uint8_t> in, rust::Slice<uint8_t> out,
                  rust::Slice<const uint64_t> counts) const;
  void alltoallv(rust::Slice<const uint8_t> in,
                 rust::Slice<const uint64_t> in_counts,
                 rust::Slice<uint8_t> out,
                 rust::Slice<const uint64_t> out_counts) const;
  void allreduce_int(rust::Slice<uint8_t> data, uint8_t dtype, uint8_t op) const;

  // Point to point: a 16-byte header (tag, length) on one slot, then the
  // payload on another. Senders are serialized by the caller.
  void p2p_send(int32_t dst, rust::Slice<const uint8_t> header,
                rust::Slice<const uint8_t> data, uint64_t timeout_ms) const;
  // Waits (without a timeout) for the next header from any peer.
  Header p2p_wait_header() const;
  // Receives a payload announced by a header; false if aborted.
  bool p2p_recv_data(int32_t src, rust::Slice<uint8_t> out,
                     uint64_t timeout_ms) const;
  // Wakes the receiver and makes it stop.
  void p2p_abort() const;

 private:
  std::shared_ptr<gloo::Context> ctx_;
  std::vector<int> peers_;
  std::unique_ptr<char[]> hdr_mem_;
  std::unique_ptr<gloo::transport::UnboundBuffer> hdr_;
  mutable std::mutex m_;
  mutable bool aborted_ = false;
  mutable gloo::transport::UnboundBuffer* cur_data_ = nullptr;
};

std::unique_ptr<GStore> bridge_store(rust::Box<StoreBridge> bridge,
                                     uint64_t timeout_ms);
std::unique_ptr<GStore> hash_store();
std::unique_ptr<GDevice> tcp_device(rust::Str hostname);
std::unique_ptr<GCtx> connect(const GStore& store, rust::Str prefix,
                              const GDevice& device, int32_t rank, int32_t size,
                              uint64_t connect_timeout_ms, uint64_t timeout_ms);

}  // namespace deeprc_gloo
