// Building, parsing and validating pst's messages (comm/protocol.capnp).
//
// A message is a ZeroMQ multipart: frame 0 is the Cap'n Proto Header; for
// Push and PullReply, frame i+1 carries the bytes of Header.chunks[i]. Tensor
// bytes are handed to ZeroMQ without copying: OutMessage::add_chunk keeps an
// owner object alive until ZeroMQ releases the frame.
//
// Every received message goes through validate() before anything acts on
// it; a Rejection says which rule failed (an ErrorCode for the Error reply
// and the rejection counter) and names the bad value.
//
// Thread safety: an OutMessage or InMessage belongs to one thread at a time.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "comm/protocol.capnp.h"
#include "comm/shard_plan.h"
#include "core/bf16.h"
#include "core/status.h"

namespace pst {

using Frames = std::vector<zmq::message_t>;

// This process's identity on the wire (Header.process): the first 8 bytes
// of the identity in its sockets' routing ids (comm/socket.cc), so random,
// non-zero and fixed for the process's life. Every OutMessage carries it,
// so a rank given to a new process (a worker that joins in a removed
// worker's place) is told from the old one, which may run again after
// SIGSTOP, whichever socket a message comes through.
uint64_t this_process();

class OutMessage {
 public:
  OutMessage(wire::Kind kind, uint64_t job_id, int32_t sender, int64_t step, uint64_t request_id);

  // The header, for the kind-specific fields (the union); chunks are added
  // with add_chunk / add_key, not here.
  wire::Header::Builder header() { return header_; }

  // A chunk whose `floats` values at `data` travel in a frame of their own,
  // without a copy. `owner` keeps `data` alive until ZeroMQ has sent the
  // frame (null: the caller guarantees it some other way).
  void add_chunk(ChunkKey key, const float* data, int64_t floats, std::shared_ptr<const void> owner);
  // The same with a copy of the values, which the frame owns: the caller's
  // buffer is free again at once.
  void add_chunk_copy(ChunkKey key, const float* data, int64_t floats);
  // The same with `values` bfloat16 values (2 bytes each) at `data`.
  void add_chunk_bf16(ChunkKey key, const uint16_t* data, int64_t values, std::shared_ptr<const void> owner);
  // A chunk named without bytes (a Pull asks for these keys).
  void add_key(ChunkKey key, int64_t floats);
  // The bytes of the chunks added so far (what travels besides the header).
  int64_t payload_bytes() const;

  // The frames to send; the OutMessage is spent afterwards.
  Frames finish();

 private:
  struct Payload {
    ChunkKey key;
    const void* data;
    int64_t values;
    wire::DType dtype;
    std::shared_ptr<const void> owner;
  };
  capnp::MallocMessageBuilder builder_;
  wire::Header::Builder header_;
  std::vector<Payload> payload_;
};

// Traversal limit of a received header, in 8-byte words: a header is small
// (a NodeTable of a few hundred nodes or a few thousand chunk keys), so a
// megabyte bounds the work a hostile frame can cause.
constexpr uint64_t kHeaderWordLimit = uint64_t{1} << 17;

// The largest frame a job's peers may send: a header frame within the
// traversal limit, or one chunk of chunk_bytes (comm/shard_plan.h).
inline int64_t max_frame_bytes(int64_t chunk_bytes) {
  return std::max<int64_t>(chunk_bytes, static_cast<int64_t>(kHeaderWordLimit * 8));
}

struct Rejection {
  wire::ErrorCode code = wire::ErrorCode::INTERNAL;
  std::string message;
};

class InMessage {
 public:
  // Takes the frames of one received multipart and decodes frame 0.
  // Garbage (not a Cap'n Proto message, over the traversal limit, empty) is
  // a Rejection with code badHeader.
  static std::unique_ptr<InMessage> parse(Frames frames, Rejection* why, uint64_t word_limit = kHeaderWordLimit);

  wire::Header::Reader header() const { return header_; }
  // Header.chunks, read once: every getChunks() would count the whole list
  // against the traversal limit again.
  capnp::List<wire::ChunkRef>::Reader chunk_refs() const { return chunks_; }
  size_t chunks() const { return static_cast<size_t>(chunks_.size()); }
  ChunkKey key(size_t i) const;
  // The values of chunk i (frame i + 1; valid for Push and PullReply after
  // validate()), float32 or bfloat16 as its dtype says.
  WireValues chunk_values(size_t i) const {
    return {frames_[i + 1].data(), chunks_[static_cast<unsigned>(i)].getDtype() == wire::DType::BFLOAT16};
  }
  // Chunk i as float32 values; only for a float32 chunk.
  const float* chunk_data(size_t i) const { return static_cast<const float*>(frames_[i + 1].data()); }
  // Its number of values.
  int64_t chunk_floats(size_t i) const;
  size_t frames() const { return frames_.size(); }
  size_t frame_bytes(size_t i) const { return frames_[i].size(); }

 private:
  InMessage() = default;
  Frames frames_;
  kj::Array<capnp::word> aligned_;  // frame 0, copied when not word aligned
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
  wire::Header::Reader header_;
  capnp::List<wire::ChunkRef>::Reader chunks_;
};

// What a receiver expects of every message.
struct Expectation {
  uint64_t job_id = 0;
  int32_t nodes = 0;                // senders are ranks 0..nodes-1 (Register may come from -1)
  const ShardPlan* plan = nullptr;  // chunk keys must exist in it (null: no chunks accepted)
  int32_t owner = -1;               // and belong to this server (-1: any owner, as a worker)
};

// True when the message may be used; otherwise fills *why. Checks: version,
// job id, kind known, sender in the node table, the union member that the
// kind needs, chunk keys that exist and are owned, dtypes (float32 and
// bfloat16), byte counts against the plan and the dtype, a Pull's dtype,
// and one frame per chunk for kinds that carry bytes.
bool validate(const InMessage& m, const Expectation& e, Rejection* why);

// The Error reply to a rejected message (with its request id, when the
// header could be read).
Frames error_reply(const Rejection& why, uint64_t job_id, int32_t sender, const InMessage* rejected);

// The Status of an error answer, `context` first: aborted for REFORM (the
// job re-forms; the node registers again), failed_precondition otherwise.
Status refused(wire::ErrorInfo::Reader error, const std::string& context);

// Bytes of one value of a dtype; 0 for one this build does not know.
int64_t dtype_bytes(wire::DType dtype);
std::string dtype_name(wire::DType dtype);  // "float32", "bfloat16", "dtype 9"

// "push", "pullReply", ... (the schema's names), or "kind 77" when unknown.
std::string kind_name(wire::Kind kind);
std::string error_code_name(wire::ErrorCode code);  // "badJob", ...

}  // namespace pst
